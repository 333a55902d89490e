import PropertyBased

@testable import TocsinCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Realistic and adversarial points and radii for geo property tests.
enum GeoGen {
    /// Real places, including ones next to the antimeridian and the poles.
    static let cities: [GeoPoint] = [
        GeoPoint(lat: 52.37, lon: 4.90),  // Amsterdam
        GeoPoint(lat: 48.86, lon: 2.35),  // Paris
        GeoPoint(lat: 51.51, lon: -0.13),  // London (prime meridian)
        GeoPoint(lat: 40.71, lon: -74.01),  // New York
        GeoPoint(lat: 35.68, lon: 139.69),  // Tokyo
        GeoPoint(lat: -33.87, lon: 151.21),  // Sydney
        GeoPoint(lat: -0.18, lon: -78.47),  // Quito (equator)
        GeoPoint(lat: -18.14, lon: 178.44),  // Suva, Fiji (antimeridian)
        GeoPoint(lat: -13.83, lon: -171.76),  // Apia, Samoa (antimeridian)
        GeoPoint(lat: 64.73, lon: 177.51),  // Anadyr (antimeridian, high latitude)
        GeoPoint(lat: 65.0, lon: -179.9),  // Chukotka coast
        GeoPoint(lat: 78.22, lon: 15.65),  // Longyearbyen
        GeoPoint(lat: 82.5, lon: -62.3),  // Alert, Nunavut
        GeoPoint(lat: -77.85, lon: 166.67),  // McMurdo
        GeoPoint(lat: -90, lon: 0),  // South Pole station
        GeoPoint(lat: 89.9, lon: 179.99),  // near the North Pole, on the antimeridian
    ]

    /// Wraps a longitude into [-180, 180] and clamps a latitude into [-90, 90].
    static func normalized(_ lat: Double, _ lon: Double) -> GeoPoint {
        var lon = lon
        while lon > 180 { lon -= 360 }
        while lon < -180 { lon += 360 }
        return GeoPoint(lat: min(90, max(-90, lat)), lon: lon)
    }

    static var clustered: Generator<GeoPoint, some SendableSequenceType> {
        zip(Gen.int(in: 0...(cities.count - 1)), Gen.double(in: -0.3...0.3), Gen.double(in: -0.3...0.3))
            .map { i, dLat, dLon in normalized(cities[i].lat + dLat, cities[i].lon + dLon) }
    }

    static var global: Generator<GeoPoint, some SendableSequenceType> {
        zip(Gen.double(in: -90...90), Gen.double(in: -180...180)).map { GeoPoint(lat: $0, lon: $1) }
    }

    /// Within half a degree of ±180, sometimes exactly on it.
    static var antimeridian: Generator<GeoPoint, some SendableSequenceType> {
        zip(Gen.double(in: -75...75), Gen.double(in: -0.5...0.5), Gen.int(in: 0...9)).map { lat, off, pick in
            if pick == 0 { return GeoPoint(lat: lat, lon: 180) }
            if pick == 1 { return GeoPoint(lat: lat, lon: -180) }
            return GeoPoint(lat: lat, lon: off >= 0 ? 180 - off : -180 - off)
        }
    }

    /// Within two degrees of a pole, sometimes exactly on it.
    static var polar: Generator<GeoPoint, some SendableSequenceType> {
        zip(Gen.double(in: 0...2), Gen.double(in: -180...180), Gen.bool, Gen.int(in: 0...9)).map { d, lon, north, pick in
            let lat = pick == 0 ? 90 : 90 - d
            return GeoPoint(lat: north ? lat : -lat, lon: lon)
        }
    }

    static var point: Generator<GeoPoint, some SendableSequenceType> {
        Gen.frequency((4.0, clustered), (2.0, global), (1.0, antimeridian), (1.0, polar))
    }

    /// Log-uniform from 0.1 to 5000 km, with exact zeros and the large-list threshold.
    static var radius: Generator<Double, some SendableSequenceType> {
        Gen.frequency(
            (12.0, Gen.double(in: log(0.1)...log(5000)).map { exp($0) }),
            (1.0, Gen.int(in: 0...3).map { [0.0, 2000.0, 1999.999, 20_037.6][$0] }))
    }

    /// Interest params; about 1 in 25 is adversarial (out-of-range, NaN, negative, infinite, null).
    static var params: Generator<[Value], some SendableSequenceType> {
        zip(point, radius, Gen.int(in: 0...4), Gen.int(in: 0...24)).map { p, r, sev, bad -> [Value] in
            var v = Fixtures.geoParams(p.lat, p.lon, r, minSeverity: Int64(sev))
            switch bad {
            case 0: v[0] = .double(95)
            case 1: v[1] = .double(-181)
            case 2: v[2] = .double(-r)
            case 3: v[2] = .double(.nan)
            case 4: v[2] = .double(.infinity)
            case 5: v[0] = .null
            case 6: v[2] = .int(Int64(r))
            default: break
            }
            return v
        }
    }

    static var event: Generator<Record, some SendableSequenceType> {
        zip(point, Gen.int(in: 1...5), Gen.int(in: 0...29)).map { p, sev, missing -> Record in
            missing == 0 ? [.null, .int(Int64(sev))] : Fixtures.geoEvent(p.lat, p.lon, severity: Int64(sev))
        }
    }
}

enum OpGen {
    /// Mostly acquires (so interests accumulate), with releases mixed in.
    static var ops: Generator<[Op], some SendableSequenceType> {
        zip(Gen.int(in: 0...9), Gen.int(in: 0...100_000))
            .map { kind, k in kind < 7 ? Op.acquire(k) : Op.release(k) }
            .array(of: 0...400)
    }
}
