import Testing
import TocsinCore

struct ByteCountTests {
    @Test(arguments: [
        ("1048576", 1_048_576), ("512KB", 512_000), ("64MiB", 64 << 20), ("10GB", 10_000_000_000), ("1.5GiB", 3 << 29),
        ("20 gib", 20 << 30), (" 2M ", 2 << 20), ("3k", 3072), ("1TB", 1_000_000_000_000), ("7b", 7),
    ] as [(String, Int64)])
    func sizesAsOperatorsWriteThem(text: String, bytes: Int64) throws {
        #expect(try ByteCount.parse(text) == bytes)
    }

    @Test(arguments: ["", "MB", "12XB", "1e9", "-5MB", "0", "0.1", "1..5MB", "99999999999TB", "nan", "inf"])
    func anythingElseIsRefusedWithItsText(text: String) {
        let error = #expect(throws: TocsinError.self) { try ByteCount.parse(text) }
        #expect(error?.code == .badRequest)
        #expect(error?.message.contains("'\(text)'") == true)
    }

    @Test func tooSmallAndTooLargeSaySo() {
        #expect(throws: TocsinError(.badRequest, "'0.1' is out of range: a size must be at least 1 byte")) { try ByteCount.parse("0.1") }
        #expect(throws: TocsinError(.badRequest, "'9000PB' is not a size: write bytes, or a number with KB, MB, GB, KiB, MiB or GiB")) {
            try ByteCount.parse("9000PB")
        }
        #expect(throws: TocsinError(.badRequest, "'99999999999TB' is out of range: a size must be under 8 EiB")) { try ByteCount.parse("99999999999TB") }
    }
}
