import ClusterAPI
import Foundation
import Testing

@Suite("JSON and YAML bodies")
struct JSONTests {
    @Test("the parser reads what Foundation writes: escapes, surrogate pairs, integers and doubles, nesting")
    func roundTrip() throws {
        let value: JSONValue = [
            "text": "tab\there \"quoted\" back\\slash / é ✓ 😀 \u{1}", "int": .int(-9_007_199_254_740_993), "double": .double(1.5e-7),
            "bool": true, "null": .null, "array": [1, "two", ["three": 3]], "empty": [:], "none": [],
        ]
        #expect(try JSONValue.parse(value.jsonData()) == value)
        #expect(try JSONValue.parse(Data(#"{"s":"\ud83d\ude00\u00e9\n"}"#.utf8))["s"] == "😀é\n")
        #expect(try JSONValue.parse(Data("  [1, 2.0, -3e2, 0]  ".utf8)) == [.int(1), .double(2), .double(-300), .int(0)])
    }

    @Test("malformed JSON is refused with where", arguments: ["{", "{\"a\" 1}", "[1,]", "tru", "\"open", "{\"a\":1} x", "01x", "{\"a\":\"\u{0}\"}"])
    func malformed(text: String) {
        let error = #expect(throws: APIError.self) { try JSONValue.parse(Data(text.utf8)) }
        #expect(error?.code == 400)
        #expect(error?.message.contains("not valid JSON") == true && error?.message.contains("byte") == true, "\(String(describing: error))")
    }

    @Test("YAML: several documents, KubeVirt manifests' scalars, quoted strings stay strings; malformed YAML names the line")
    func yaml() throws {
        let documents = try YAML.documents("a: 1\nb: true\nc: \"1\"\nd: 128Mi\ne: null\n---\n---\nx: [1, 2]\n")
        #expect(documents.count == 2)
        #expect(documents[0] == ["a": 1, "b": true, "c": "1", "d": "128Mi", "e": .null])
        #expect(try YAML.document(YAML.text(documents[0])) == documents[0], "YAML output reads back the same")
        let error = #expect(throws: APIError.self) { try YAML.documents("a: [1, 2\nb: c\n") }
        #expect(error?.message.contains("line") == true, "\(String(describing: error))")
    }
}
