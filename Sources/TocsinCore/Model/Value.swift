/// A point on the Earth, in degrees (WGS84).
public struct GeoPoint: Sendable, Hashable {
    public var lat: Double
    public var lon: Double

    public init(lat: Double, lon: Double) {
        self.lat = lat
        self.lon = lon
    }

    /// Great-circle distance in kilometres (haversine, mean Earth radius 6371.0088 km).
    /// The matcher's indexes and the expression evaluator both call this one function,
    /// so an index never disagrees with a brute-force evaluation.
    @inlinable
    public func distanceKm(to other: GeoPoint) -> Double {
        let toRad = Double.pi / 180
        let dLat = (other.lat - lat) * toRad
        let dLon = (other.lon - lon) * toRad
        let s1 = _sin(dLat / 2)
        let s2 = _sin(dLon / 2)
        let a = s1 * s1 + _cos(lat * toRad) * _cos(other.lat * toRad) * s2 * s2
        return 2 * GeoPoint.earthRadiusKm * _asin(min(1, a.squareRoot()))
    }

    public static let earthRadiusKm = 6371.0088

    /// A point if the coordinates are finite and in range (lat in [-90, 90], lon in [-180, 180]),
    /// else nil. `point(lat, lon)` in the channel language and the geo index both use this, so an
    /// out-of-range point is null (never matches) everywhere.
    @inlinable
    public static func validated(lat: Double, lon: Double) -> GeoPoint? {
        guard lat >= -90, lat <= 90, lon >= -180, lon <= 180 else { return nil }
        return GeoPoint(lat: lat, lon: lon)
    }
}

/// The type of a stream field or a channel parameter.
public enum FieldType: String, Sendable, Hashable, Codable, CaseIterable {
    case string
    case int
    case double
    case bool
    /// An instant, milliseconds since the Unix epoch; JSON: RFC 3339 string or integer milliseconds.
    case time
    /// A point; JSON: `{"lat": 52.1, "lon": 4.3}`.
    case geo
    /// JSON: an array of strings.
    case stringList = "list<string>"

    public var isNumeric: Bool { self == .int || self == .double }
}

/// A typed value: a field of an event, a parameter of a subscription, a literal of an expression.
public enum Value: Sendable, Hashable {
    case null
    case string(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)
    /// Milliseconds since the Unix epoch.
    case time(Int64)
    case geo(GeoPoint)
    case stringList([String])

    /// The value as a Double, for numeric comparison across int and double.
    @inlinable
    public var numeric: Double? {
        switch self {
        case .int(let v): Double(v)
        case .double(let v): v
        case .time(let v): Double(v)
        default: nil
        }
    }

    public var type: FieldType? {
        switch self {
        case .null: nil
        case .string: .string
        case .int: .int
        case .double: .double
        case .bool: .bool
        case .time: .time
        case .geo: .geo
        case .stringList: .stringList
        }
    }
}

// Foundation-free math, so the core stays light.
#if canImport(Glibc)
import Glibc
@usableFromInline func _sin(_ x: Double) -> Double { Glibc.sin(x) }
@usableFromInline func _cos(_ x: Double) -> Double { Glibc.cos(x) }
@usableFromInline func _asin(_ x: Double) -> Double { Glibc.asin(x) }
#elseif canImport(Darwin)
import Darwin
@usableFromInline func _sin(_ x: Double) -> Double { Darwin.sin(x) }
@usableFromInline func _cos(_ x: Double) -> Double { Darwin.cos(x) }
@usableFromInline func _asin(_ x: Double) -> Double { Darwin.asin(x) }
#endif
