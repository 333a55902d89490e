import HTTPTypes
import Hummingbird
import TocsinCore

extension TocsinError.Code {
    /// The one place error codes map to HTTP statuses.
    var httpStatus: HTTPResponse.Status {
        switch self {
        case .badJSON, .badRequest, .unknownMessage, .notIdentified: .badRequest
        case .schemaViolation, .invalidStream, .invalidChannel, .invalidParams: .unprocessableContent
        case .unknownStream, .unknownChannel, .unknownSubscription, .notFound: .notFound
        case .tooLarge: .contentTooLarge
        case .conflict: .conflict
        case .unavailable: .serviceUnavailable
        default: .internalServerError
        }
    }
}

extension TocsinError {
    /// Any error as a TocsinError; unexpected ones become `internal`.
    static func from(_ error: any Error) -> TocsinError {
        (error as? TocsinError) ?? TocsinError(.internalError, "unexpected failure: \(error)")
    }

    /// `{"error": {"code": "...", "message": "..."}}` with the code's status.
    var response: Response {
        let body = JSONValue.object(["error": .object(["code": .string(code.rawValue), "message": .string(message)])]).serialized
        return Response.json(body, status: code.httpStatus)
    }
}

extension Response {
    static func json(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
}
