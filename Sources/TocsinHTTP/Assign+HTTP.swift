package import HTTPTypes
package import Hummingbird
package import TocsinCore

extension Request {
    /// The query of `GET /v1/assign`: `client` is required; `region`, `lat`+`lon` and `exclude`
    /// (comma-separated broker ids) are optional. The controller and a standalone broker read it alike.
    package func assignmentRequest() throws(TocsinError) -> AssignmentRequest {
        let q = uri.queryParameters
        guard let client = q.get("client"), !client.isEmpty, client.utf8.count <= 256 else {
            throw TocsinError(.badRequest, "query parameter 'client' is required (1 to 256 bytes)")
        }
        let lat = try doubleQuery("lat", range: -90...90)
        let lon = try doubleQuery("lon", range: -180...180)
        guard (lat == nil) == (lon == nil) else {
            throw TocsinError(.badRequest, "give both 'lat' and 'lon', or neither")
        }
        let location = lat.flatMap { lat in lon.map { GeoPoint(lat: lat, lon: $0) } }
        let region = q.get("region").flatMap { $0.isEmpty ? nil : String($0) }
        let exclude = Set((q.get("exclude") ?? "").split(separator: ",").map(String.init))
        return AssignmentRequest(clientID: client, region: region, location: location, exclude: exclude)
    }
}

extension Router {
    /// Answers the other methods on `path` with 405 `method_not_allowed` and an `Allow` header,
    /// instead of a bare 404.
    package func refuseMethods(on path: RouterPath, except allowed: [HTTPRequest.Method]) {
        let allow = allowed.map(\.rawValue).joined(separator: ", ")
        for method in [HTTPRequest.Method.get, .post, .put, .delete, .patch] where !allowed.contains(method) {
            on(path, method: method) { request, _ in
                var response = TocsinError(
                    .methodNotAllowed, "\(request.method.rawValue) is not allowed on \(request.uri.path); use \(allow)"
                ).response
                response.headers[.allow] = allow
                return response
            }
        }
    }
}
