import ClusterAPI
import Foundation
import Testing

/// Inputs the libFuzzer targets in `Fuzz/` found, kept as tests.
@Suite("Fuzzer findings")
struct FuzzFindingsTests {
    @Test("an integer quantity of 2^63 or more in magnitude (Int64.max rounds up to 2^63) is not a quantity (fuzz-quantity)")
    func integerQuantityAtTheLimit() {
        #expect(Quantity(JSONValue.int(.max)) == nil)
        #expect(Quantity(JSONValue.int(.min)) == nil)
        #expect(Quantity(try? JSONValue.parse(Data("9223372036854775807".utf8))) == nil)
        #expect(Quantity(JSONValue.int(1 << 62))?.bytes == 1 << 62)
        #expect(Quantity(JSONValue.int(-5))?.value == -5)
    }
}
