import Foundation
import JWTKit
public import TocsinCore

/// The signing keys of a Tocsin network, as kept in a key file (docs/security.md, "Keys"):
///
/// ```json
/// {"sign": "k2",
///  "keys": [{"kid": "k1", "alg": "HS256", "secret": "<base64, at least 32 bytes>"},
///           {"kid": "k2", "alg": "ES256", "privateKey": "-----BEGIN PRIVATE KEY-----…"},
///           {"kid": "k3", "alg": "ES256", "publicKey": "-----BEGIN PUBLIC KEY-----…"}]}
/// ```
///
/// Every key verifies tokens whose header names its `kid`; `sign` names the key new tokens are
/// minted with (it must be able to sign: an HS256 secret or an ES256 private key). Rotation is
/// adding a key, moving `sign` to it, and removing the old key once its tokens expired.
public struct KeyRing: Sendable, Hashable {
    public enum Algorithm: String, Sendable, Hashable, CaseIterable {
        case hs256 = "HS256"
        case es256 = "ES256"
    }

    public struct Key: Sendable, Hashable {
        public var id: String
        public var algorithm: Algorithm
        /// HS256: the shared secret's bytes.
        public var secret: [UInt8]?
        /// ES256: a PKCS#8 (or SEC1) PEM private key, which also verifies.
        public var privateKeyPEM: String?
        /// ES256: a PEM public key, for nodes that verify but never sign.
        public var publicKeyPEM: String?

        public var canSign: Bool { secret != nil || privateKeyPEM != nil }

        /// A fresh random key.
        public static func generate(id: String, algorithm: Algorithm) -> Key {
            switch algorithm {
            case .hs256:
                var generator = SystemRandomNumberGenerator()
                let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
                return Key(id: id, algorithm: .hs256, secret: bytes)
            case .es256:
                return Key(id: id, algorithm: .es256, privateKeyPEM: ES256PrivateKey().pemRepresentation)
            }
        }
    }

    public var keys: [Key]
    /// The key new tokens are signed with.
    public var signingKeyID: String?

    public init(keys: [Key], signingKeyID: String?) {
        self.keys = keys
        self.signingKeyID = signingKeyID
    }

    public var signingKey: Key? { keys.first { $0.id == signingKeyID } }

    /// A key id for a key made now: `k-<yyyymmdd>-<random>`.
    public static func newKeyID() -> String {
        let day = TimeFormat.format(Int64(Date().timeIntervalSince1970 * 1000)).prefix(10).replacingOccurrences(of: "-", with: "")
        return "k-\(day)-" + UUID().uuidString.lowercased().prefix(6)
    }

    // MARK: The file

    /// Reads and checks a key file; every problem is an `invalid_keys`-style bad request naming the file.
    public static func load(path: String) throws(TocsinError) -> KeyRing {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw TocsinError(.badRequest, "cannot read the key file \(path): \(error.localizedDescription)")
        }
        do {
            return try KeyRing(json: try JSONValue.parse(data))
        } catch {
            throw TocsinError(.badRequest, "the key file \(path) is invalid: \(error.message)")
        }
    }

    /// Writes the key file readable by its owner only (it holds secrets), atomically.
    public func save(path: String) throws {
        let url = URL(fileURLWithPath: path)
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
        guard FileManager.default.createFile(atPath: temporary.path, contents: Data(json.serialized.utf8), attributes: [.posixPermissions: 0o600])
        else { throw TocsinError(.badRequest, "cannot write the key file \(path)") }
        if rename(temporary.path, url.path) != 0 {
            try? FileManager.default.removeItem(at: temporary)
            throw TocsinError(.badRequest, "cannot write the key file \(path): \(String(cString: strerror(errno)))")
        }
    }

    public init(json: JSONValue) throws(TocsinError) {
        guard case .object(let o) = json, case .array(let list)? = o["keys"], !list.isEmpty else {
            throw TocsinError(.badRequest, "a key file is an object with a non-empty 'keys' array")
        }
        var keys: [Key] = []
        for entry in list {
            guard case .object(let k) = entry, let id = k["kid"]?.stringValue, !id.isEmpty, id.utf8.count <= 128 else {
                throw TocsinError(.badRequest, "every key needs a 'kid' of 1 to 128 bytes")
            }
            guard !keys.contains(where: { $0.id == id }) else { throw TocsinError(.badRequest, "the kid '\(id)' appears twice") }
            guard let name = k["alg"]?.stringValue, let algorithm = Algorithm(rawValue: name) else {
                throw TocsinError(.badRequest, "key '\(id)': 'alg' must be HS256 or ES256")
            }
            switch algorithm {
            case .hs256:
                guard let text = k["secret"]?.stringValue, let bytes = Data(base64Encoded: text), bytes.count >= 32 else {
                    throw TocsinError(.badRequest, "key '\(id)': an HS256 key needs a base64 'secret' of at least 32 bytes")
                }
                keys.append(Key(id: id, algorithm: .hs256, secret: Array(bytes)))
            case .es256:
                let privatePEM = k["privateKey"]?.stringValue
                let publicPEM = k["publicKey"]?.stringValue
                do {
                    if let privatePEM { _ = try ES256PrivateKey(pem: privatePEM) }
                    if let publicPEM { _ = try ES256PublicKey(pem: publicPEM) }
                } catch {
                    throw TocsinError(.badRequest, "key '\(id)': the PEM key does not parse as a P-256 key: \(error)")
                }
                guard privatePEM != nil || publicPEM != nil else {
                    throw TocsinError(.badRequest, "key '\(id)': an ES256 key needs 'privateKey' or 'publicKey' (PEM)")
                }
                keys.append(Key(id: id, algorithm: .es256, privateKeyPEM: privatePEM, publicKeyPEM: privatePEM == nil ? publicPEM : nil))
            }
        }
        let sign = o["sign"]?.stringValue
        if let sign {
            guard let key = keys.first(where: { $0.id == sign }) else {
                throw TocsinError(.badRequest, "'sign' names '\(sign)', which is not in 'keys'")
            }
            guard key.canSign else { throw TocsinError(.badRequest, "'sign' names '\(sign)', which has only a public key") }
        }
        self.init(keys: keys, signingKeyID: sign)
    }

    public var json: JSONValue {
        var o: [String: JSONValue] = [
            "keys": .array(
                keys.map { key in
                    var k: [String: JSONValue] = ["kid": .string(key.id), "alg": .string(key.algorithm.rawValue)]
                    if let secret = key.secret { k["secret"] = .string(Data(secret).base64EncodedString()) }
                    if let pem = key.privateKeyPEM { k["privateKey"] = .string(pem) }
                    if let pem = key.publicKeyPEM { k["publicKey"] = .string(pem) }
                    return .object(k)
                })
        ]
        if let signingKeyID { o["sign"] = .string(signingKeyID) }
        return .object(o)
    }
}
