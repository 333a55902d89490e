package import TocsinCore

extension HTTPConnectionGuard {
    /// The guard's decisions, free of NIO: fed what the connection does, it says what to do
    /// (forward, arm or cancel the one deadline, answer and close). `HTTPConnectionGuard` carries
    /// the actions out on the channel's event loop.
    struct StateMachine: Equatable {
        enum Phase: Equatable {
            /// Waiting for a request's head; the deadline is the head timeout.
            case awaitingHead
            /// The head arrived; the deadline is the body timeout.
            case readingBody
            /// The request arrived whole; the application is answering it (no deadline).
            case responding
            /// A WebSocket upgrade was asked for: the WebSocket layer owns the connection now and
            /// everything passes through untouched.
            case passthrough
            /// The guard answered with an error and is closing the connection.
            case closed
        }

        enum Timer: Equatable {
            case keep
            case start(Duration)
            case cancel
        }

        /// An answer the guard writes itself, after which it closes the connection.
        struct Rejection: Equatable {
            /// Its code gives the status (`TocsinError.Code.httpStatus`).
            var error: TocsinError
            /// Extra response headers, name and value.
            var headers: [String: String] = [:]
        }

        enum Action: Equatable {
            case forward(Timer)
            case reject(Rejection)
            /// Drop the part (the connection is closing).
            case drop
        }

        /// What the guard needs to know of a request head.
        struct Head: Equatable {
            var uriBytes: Int
            var majorVersion: Int
            /// `Upgrade: websocket` was asked for.
            var webSocketUpgrade: Bool
            /// The `Sec-WebSocket-Version` header, if any.
            var webSocketVersion: String?
        }

        let limits: HTTPEdgeLimits
        private(set) var phase: Phase = .awaitingHead

        init(limits: HTTPEdgeLimits) {
            self.limits = limits
        }

        /// The connection is open: the first head is due, unless the server already holds as
        /// many connections as it may (`HTTPEdgeLimits.connectionLimit`).
        mutating func started(overCapacity: Bool) -> Action {
            guard !overCapacity else {
                return reject(
                    TocsinError(.unavailable, "the server holds as many connections as it may; retry later or elsewhere"),
                    headers: ["Retry-After": "1"])
            }
            return .forward(.start(limits.headTimeout))
        }

        mutating func receivedHead(_ head: Head) -> Action {
            switch phase {
            case .closed: return .drop
            case .passthrough: return .forward(.keep)
            case .awaitingHead, .readingBody, .responding: break
            }
            if head.majorVersion != 1 {
                return reject(TocsinError(.httpVersionNotSupported, "only HTTP/1.0 and HTTP/1.1 are served here"))
            }
            if head.uriBytes > limits.maxURIBytes {
                return reject(TocsinError(.uriTooLong, "the request target may be at most \(limits.maxURIBytes) bytes, got \(head.uriBytes)"))
            }
            if head.webSocketUpgrade {
                if let version = head.webSocketVersion, version != "13" {
                    return reject(TocsinError(.upgradeRequired, "WebSocket version \(version) is not supported; use Sec-WebSocket-Version: 13"),
                        headers: ["Sec-WebSocket-Version": "13"])
                }
                phase = .passthrough
                return .forward(.cancel)
            }
            phase = .readingBody
            return .forward(.start(limits.bodyTimeout))
        }

        mutating func receivedBodyPart() -> Action {
            phase == .closed ? .drop : .forward(.keep)
        }

        mutating func receivedEnd() -> Action {
            switch phase {
            case .closed: return .drop
            case .readingBody:
                phase = .responding
                return .forward(.cancel)
            case .awaitingHead, .responding, .passthrough:
                // The end of a request answered before its body was read (the application
                // drains it): the head deadline already bounds that.
                return .forward(.keep)
            }
        }

        /// The application finished a response: the next request's head is due.
        mutating func sentResponseEnd() -> Timer {
            switch phase {
            case .readingBody, .responding:
                phase = .awaitingHead
                return .start(limits.headTimeout)
            case .awaitingHead, .passthrough, .closed:
                return .keep
            }
        }

        mutating func deadlinePassed() -> Action {
            switch phase {
            case .awaitingHead:
                return reject(TocsinError(.timeout, "no complete request head within \(Self.seconds(limits.headTimeout))"))
            case .readingBody:
                return reject(TocsinError(.timeout, "the request body did not arrive within \(Self.seconds(limits.bodyTimeout))"))
            case .responding, .passthrough, .closed:
                return .drop
            }
        }

        enum ParseError: Equatable {
            case headTooLarge
            case unknownMethod
            case badVersion
            case malformed
        }

        mutating func parseFailed(_ error: ParseError) -> Action {
            switch phase {
            case .closed, .passthrough: return .drop
            case .awaitingHead, .readingBody, .responding: break
            }
            switch error {
            case .headTooLarge:
                return reject(TocsinError(
                        .headersTooLarge,
                        "a request head may be at most \(limits.maxHeadBytes) bytes in at most \(limits.maxHeaderCount) header fields"))
            case .unknownMethod:
                return reject(TocsinError(.notImplemented, "the request method is not one this server knows"))
            case .badVersion:
                return reject(TocsinError(.httpVersionNotSupported, "only HTTP/1.0 and HTTP/1.1 are served here"))
            case .malformed:
                return reject(TocsinError(.badRequest, "the request is not valid HTTP/1.1"))
            }
        }

        private mutating func reject(_ error: TocsinError, headers: [String: String] = [:]) -> Action {
            phase = .closed
            return .reject(Rejection(error: error, headers: headers))
        }

        static func seconds(_ d: Duration) -> String {
            let ms = d.milliseconds
            return ms % 1000 == 0 ? "\(ms / 1000) s" : "\(ms) ms"
        }
    }
}
