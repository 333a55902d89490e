package import NIOCore
package import NIOSSL

extension Channel {
    /// Adds the handler `make` builds where it sees the connection's bytes first in the clear:
    /// right after the TLS handler on a TLS connection (before it, it would see ciphertext and
    /// write past the encryption), first in the pipeline otherwise.
    package func addHandlerNearestTheSocket(_ make: @escaping @Sendable () -> any ChannelHandler) async throws {
        let channel = self
        try await eventLoop.submit {
            let operations = channel.pipeline.syncOperations
            let tls = try? operations.handler(type: NIOSSLServerHandler.self)
            try operations.addHandler(make(), position: tls.map { .after($0) } ?? .first)
        }.get()
    }
}
