import ClusterAPI
import Foundation
import Testing

/// Inputs the libFuzzer targets in `Fuzz/` found, kept as tests.
@Suite("Fuzzer findings")
struct FuzzFindingsTests {
    @Test(
        "an integer quantity of 2^63 or more in magnitude (Int64.max rounds up to 2^63) is not a quantity (fuzz-quantity)"
    )
    func integerQuantityAtTheLimit() {
        #expect(Quantity(JSONValue.int(.max)) == nil)
        #expect(Quantity(JSONValue.int(.min)) == nil)
        #expect(Quantity(try? JSONValue.parse(Data("9223372036854775807".utf8))) == nil)
        #expect(Quantity(JSONValue.int(1 << 62))?.bytes == 1 << 62)
        #expect(Quantity(JSONValue.int(-5))?.value == -5)
    }

    @Test(
        "a YAML 1.1 sexagesimal integer too large for Int is a string, not a trap (fuzz-kubeconfig: Yams multiplies without overflow checks); other integer forms still read"
    )
    func sexagesimalOverflow() throws {
        let value = try YAML.document(
            "a: 2122122:1:0:1:02:1:0:1:0\nb: 1:30\nc: 0x1F\nd: -12\ne: 0o17\nf: 99999999999999999999\ng: 1_000\n")
        #expect(value["a"] == "2122122:1:0:1:02:1:0:1:0")
        #expect(value["b"] == "1:30", "base 60 is not read as a number (as Kubernetes' YAML reader does not)")
        #expect(value["c"] == .int(31) && value["d"] == .int(-12) && value["e"] == .int(15))
        #expect(value["f"] == "99999999999999999999", "beyond Int64: kept as text")
        #expect(value["g"] == .int(1000))
    }
}

/// The fuzz package builds ClusterAPI from links to its files: a file added here and not linked there breaks only the
/// fuzz build, which runs last in CI.
@Test("every ClusterAPI source file is linked into the fuzz package")
func fuzzPackageLinksEveryClusterAPIFile() throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    let sources = root.appendingPathComponent("Sources/ClusterAPI").path
    let fuzz = root.appendingPathComponent("Fuzz/Sources/ClusterAPI").path
    let files = try FileManager.default.contentsOfDirectory(atPath: sources).filter { $0.hasSuffix(".swift") }
    #expect(!files.isEmpty)
    for file in files {
        #expect(FileManager.default.fileExists(atPath: "\(fuzz)/\(file)"), "Fuzz/Sources/ClusterAPI/\(file) is missing")
    }
}
