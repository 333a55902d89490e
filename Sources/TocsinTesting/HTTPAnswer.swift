@_exported import TocsinDev
import TocsinCore

/// An HTTP reply read off a raw connection: its status, and the code of its JSON error body.
public struct HTTPAnswer: Sendable {
    public let status: Int?
    public let code: String?
    public let text: String

    public init(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        self.text = text
        status = text.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap { Int($0) }
        var code: String?
        if let body = text.range(of: "\r\n\r\n").map({ text[$0.upperBound...] }),
            let json = try? JSONValue.parse(Array(body.utf8)), case .object(let error)? = json["error"]
        {
            code = error["code"]?.stringValue
        }
        self.code = code
    }
}
