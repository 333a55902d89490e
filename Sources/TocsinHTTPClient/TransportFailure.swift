import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
import NIOSSL

/// A call to a Tocsin node that failed below the protocol: nothing answered, or not in time, or
/// the address is wrong. Its `description` is one sentence that says what happened and what to
/// check, e.g. "cannot reach a broker at http://127.0.0.1:7400 (connection refused); is `tocsin
/// serve` running?" — not a NIO error description.
///
/// `TransportFailure.from(_:url:timeout:)` is the one place that turns the errors of SwiftNIO and
/// AsyncHTTPClient into these (the client library adds the WebSocket client's, through
/// `make(_:_:url:)`); `HTTPCall`, `ControllerClient` and `Connection` throw them, so every command
/// and every client log says the same thing about the same failure.
public struct TransportFailure: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong, as a program would test it.
    public enum Kind: String, Sendable, Hashable {
        /// Nothing listens there.
        case refused
        /// No connection within the connect timeout (including a TLS handshake that never finished).
        case timedOut
        /// The host name does not resolve.
        case hostNotFound
        /// No route to the host or its network.
        case unreachable
        /// TLS failed: not an https server, or a handshake that did not complete.
        case tls
        /// The peer's certificate does not chain to a trusted CA, or does not name its host.
        case untrusted
        /// The URL itself is unusable.
        case badURL
        /// Connected, but no answer within the request's time limit.
        case noAnswer
        /// The connection closed (or was reset) before the answer.
        case closed
        /// The server there did not accept a WebSocket connection.
        case notWebSocket
        /// Anything else below the protocol.
        case other
    }

    /// What went wrong.
    public var kind: Kind
    /// Where the call went: scheme, host and port (the whole text when it is not a URL).
    public var url: String
    /// The failure in a few words, as it appears in parentheses: "connection refused".
    public var problem: String

    /// A failure of `kind` for a call to `url`; `problem` in a few words.
    public init(kind: Kind, url: String, problem: String) {
        self.kind = kind
        self.url = url
        self.problem = problem
    }

    /// The whole sentence, as `sentence()` says it with no role or command named.
    public var description: String { sentence() }

    /// The sentence, naming what was expected at the URL (`role`) and the command that runs it.
    public func sentence(role: String = "a broker", runBy command: String = "`tocsin serve`") -> String {
        switch kind {
        case .refused:
            "cannot reach \(role) at \(url) (\(problem)); is \(command) running?"
        case .timedOut:
            url.hasPrefix("https") || url.hasPrefix("wss")
                ? "cannot reach \(role) at \(url) (\(problem)); is the address right, and does it serve \(url.hasPrefix("wss") ? "wss" : "https")?"
                : "cannot reach \(role) at \(url) (\(problem)); is the address right and the host up?"
        case .hostNotFound:
            "cannot reach \(role) at \(url) (\(problem)); check the host name"
        case .unreachable:
            "cannot reach \(role) at \(url) (\(problem)); check the address and the network"
        case .tls:
            "cannot reach \(role) at \(url) (\(problem)); check that it serves TLS with a trusted certificate, or use http://"
        case .untrusted:
            "the certificate of \(url) is not trusted: \(problem); if a private CA signed it, trust that CA (--tls-ca FILE; TLSTrust(caFile:) in the library)"
        case .badURL:
            "'\(url)' is not a URL Tocsin can use (\(problem)); give one like http://127.0.0.1:7400"
        case .noAnswer:
            url.hasPrefix("https") || url.hasPrefix("wss")
                ? "\(role) at \(url) accepted the connection but \(problem); does it serve TLS, or is it overloaded or stuck?"
                : "\(role) at \(url) accepted the connection but \(problem); it may be overloaded or stuck"
        case .closed:
            "the connection to \(role) at \(url) closed before the answer; is it a Tocsin node, and is it restarting?"
        case .notWebSocket:
            "\(role) at \(url) did not accept a WebSocket connection (\(problem)); is it a Tocsin broker's ws://HOST:PORT/v1/ws?"
        case .other:
            "cannot reach \(role) at \(url) (\(problem))"
        }
    }

    /// The failure `error` means for a call to `url`, or nil when `error` is not a transport failure
    /// (a `TocsinError` the server answered, a cancellation, one already made into this type is
    /// returned as is). `timeout` is the call's time limit, named when it ran out.
    public static func from(_ error: any Error, url: String, timeout: Duration? = nil) -> TransportFailure? {
        if let failure = error as? TransportFailure { return failure }
        func make(_ kind: Kind, _ problem: String) -> TransportFailure { Self.make(kind, problem, url: url) }
        switch error {
        case let error as NIOConnectionError:
            if error.connectionErrors.isEmpty, error.dnsAError != nil || error.dnsAAAAError != nil {
                return make(.hostNotFound, "host '\(error.host)' not found")
            }
            if let first = error.connectionErrors.first?.error { return from(first, url: url, timeout: timeout) }
            return make(.other, "could not connect")
        case let error as IOError:
            return fromErrno(error.errnoCode, url: url, make)
        case let error as SocketAddressError:
            if case .unknown(let host, _) = error { return make(.hostNotFound, "host '\(host)' not found") }
            return make(.hostNotFound, "the host name does not resolve")
        case let error as ChannelError:
            switch error {
            case .connectTimeout(let amount):
                return make(.timedOut, "no connection within \(Self.text(.nanoseconds(amount.nanoseconds)))")
            case .ioOnClosedChannel, .alreadyClosed, .eof, .outputClosed, .inputClosed:
                return make(.closed, "connection closed")
            default:
                return make(.other, "\(error)")
            }
        case let error as HTTPClientError:
            switch error {
            case .connectTimeout:
                return make(.timedOut, "no connection within the connect timeout")
            case .tlsHandshakeTimeout:
                return make(.tls, "the TLS handshake timed out")
            case .deadlineExceeded, .readTimeout, .writeTimeout:
                return make(.noAnswer, timeout.map { "did not answer within \(Self.text($0))" } ?? "did not answer in time")
            case .remoteConnectionClosed:
                return make(.closed, "connection closed")
            case .invalidURL:
                return make(.badURL, "not a URL")
            case .emptyScheme:
                return make(.badURL, "no http:// or https://")
            case .emptyHost:
                return make(.badURL, "no host")
            case .cancelled, .requestStreamCancelled:
                return nil
            default:
                if String(describing: error).contains("unsupportedScheme") {
                    return make(.badURL, "only http:// and https:// work here")
                }
                return make(.other, "\(error)")
            }
        case let error as NIOSSLError:
            if case .handshakeFailed(let reason) = error, "\(reason)".contains("CERTIFICATE_VERIFY_FAILED") {
                return make(.untrusted, "it does not chain to a trusted CA (signed by an unknown or private CA, self-signed, or expired)")
            }
            return make(.tls, "TLS failed: \(error)")
        case let error as NIOSSLExtraError:
            if error == .failedToValidateHostname {
                return make(.untrusted, "it does not name the host of the URL")
            }
            if error == .cannotUseIPAddressInSNI {
                return make(.badURL, "a wss:// URL needs a host name its certificate names, not an IP address")
            }
            return make(.tls, "TLS failed: \(error)")
        case is BoringSSLError:
            return make(.tls, "TLS failed: \(error)")
        default:
            return nil
        }
    }

    /// A failure of `kind` for a call to `url`: named by its origin (`scheme://host:port`), or, for
    /// a bad URL, as the user gave it (without the API path the call added).
    package static func make(_ kind: Kind, _ problem: String, url: String) -> TransportFailure {
        let given = url.range(of: "/v1/").map { String(url[..<$0.lowerBound]) } ?? url
        return TransportFailure(kind: kind, url: kind == .badURL ? given : origin(of: url), problem: problem)
    }

    private static func fromErrno(_ code: CInt, url: String, _ make: (Kind, String) -> TransportFailure) -> TransportFailure {
        switch code {
        case ECONNREFUSED: make(.refused, "connection refused")
        case ETIMEDOUT: make(.timedOut, "connecting timed out")
        case EHOSTUNREACH: make(.unreachable, "no route to the host")
        case ENETUNREACH: make(.unreachable, "the network is unreachable")
        // Closed or reset: the same to the user (and so one warning, not two, when it recurs).
        case ECONNRESET, EPIPE: make(.closed, "connection closed")
        case EADDRNOTAVAIL: make(.unreachable, "the address is not available")
        default: make(.other, String(cString: strerror(code)).lowercased())
        }
    }

    /// `scheme://host:port` of a URL, or the text itself when it does not parse as one.
    package static func origin(of url: String) -> String {
        guard let parts = URLComponents(string: url), let scheme = parts.scheme, let host = parts.host, !host.isEmpty else { return url }
        let shownHost = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        return "\(scheme)://\(shownHost)" + (parts.port.map { ":\($0)" } ?? "")
    }

    /// "2 s", "500 ms".
    static func text(_ d: Duration) -> String {
        let ms = d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
        return ms % 1000 == 0 ? "\(ms / 1000) s" : "\(ms) ms"
    }
}
