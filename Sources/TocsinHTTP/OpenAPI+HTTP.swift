internal import HTTPTypes
internal import Hummingbird
internal import NIOCore

extension GuardedRoutes {
    /// `GET /v1/openapi.yaml` (no token): docs/openapi.yaml, embedded in the binary, so a
    /// broker or controller describes the API it serves.
    package func addOpenAPIRoute() {
        open(.get, "/v1/openapi.yaml") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "application/yaml"
            headers[.cacheControl] = "no-cache"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: PackageResources.openapi_yaml)))
        }
    }
}
