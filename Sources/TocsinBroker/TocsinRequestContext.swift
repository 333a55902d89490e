import Hummingbird
import NIOCore

/// The request context of every route: Hummingbird's basics and the connection's channel.
struct TocsinRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }
}
