import ClusterAPI
import Foundation
import Testing

@Suite("JSON and YAML bodies")
struct JSONTests {
    @Test("the parser reads what Foundation writes: escapes, surrogate pairs, integers and doubles, nesting")
    func roundTrip() throws {
        let value: JSONValue = [
            "text": "tab\there \"quoted\" back\\slash / é ✓ 😀 \u{1}", "int": .int(-9_007_199_254_740_993),
            "double": .double(1.5e-7),
            "bool": true, "null": .null, "array": [1, "two", ["three": 3]], "empty": [:], "none": [],
        ]
        #expect(try JSONValue.parse(value.jsonData()) == value)
        #expect(try JSONValue.parse(Data(#"{"s":"\ud83d\ude00\u00e9\n"}"#.utf8))["s"] == "😀é\n")
        #expect(
            try JSONValue.parse(Data("  [1, 2.0, -3e2, 0]  ".utf8)) == [.int(1), .double(2), .double(-300), .int(0)])
    }

    @Test(
        "compact JSON is written byte for byte as Foundation's encoder writes it (sorted keys, escapes, doubles); a non-finite double becomes null"
    )
    func writerMatchesFoundation() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var values: [JSONValue] = [
            [
                "text": "tab\there \"quoted\" back\\slash / é ✓ 😀 \u{1}\u{1f}\u{7f}\u{8}\u{c}\r\n",
                "int": .int(-9_007_199_254_740_993),
                "doubles": [
                    .double(1.0), .double(0.1), .double(-0.0), .double(1e20), .double(1.5e-7), .double(2.5e15),
                    .double(123456789.125),
                ],
                "bool": true, "null": .null, "array": [1, "two", ["three": 3]], "empty": [:], "none": [],
                "a10": 1, "a9": 2, "aB": 3, "a_": 4, "": 5, "Z": 6, "é": 7,
            ],
            .string(""), .int(0), .int(Int64.min), .int(Int64.max), .null, [], [:],
        ]
        // Random documents: nested objects and arrays of every kind of scalar.
        var generator = SystemRandomNumberGenerator()
        func random(_ depth: Int) -> JSONValue {
            switch Int.random(in: 0..<(depth > 3 ? 5 : 7), using: &generator) {
            case 0: return .null
            case 1: return .bool(Bool.random(using: &generator))
            case 2: return .int(Int64.random(in: Int64.min...Int64.max, using: &generator))
            case 3:
                return .double(
                    Double.random(in: -1e6...1e6, using: &generator).rounded()
                        / [1, 10, 1000, 3][Int.random(in: 0..<4, using: &generator)])
            case 4:
                return .string(
                    String(
                        (0..<Int.random(in: 0..<12, using: &generator)).map { _ in
                            "aZ0 _-/\"\\\n\té✓😀\u{3}".randomElement(using: &generator)!
                        }))
            case 5: return .array((0..<Int.random(in: 0..<4, using: &generator)).map { _ in random(depth + 1) })
            default:
                return .object(
                    Dictionary(
                        (0..<Int.random(in: 0..<5, using: &generator)).map { index in
                            ("k\(Int.random(in: 0..<20, using: &generator))\(index)", random(depth + 1))
                        }, uniquingKeysWith: { first, _ in first }))
            }
        }
        for _ in 0..<300 { values.append(random(0)) }
        for value in values {
            let ours = String(decoding: value.jsonData(), as: UTF8.self)
            let foundation = String(decoding: try encoder.encode(value), as: UTF8.self)
            #expect(ours == foundation)
        }
        #expect(JSONValue.array([.double(.nan), .double(.infinity), 1]).jsonString() == "[null,null,1]")
    }

    @Test(
        "malformed JSON is refused with where",
        arguments: ["{", "{\"a\" 1}", "[1,]", "tru", "\"open", "{\"a\":1} x", "01x", "{\"a\":\"\u{0}\"}"])
    func malformed(text: String) {
        let error = #expect(throws: APIError.self) { try JSONValue.parse(Data(text.utf8)) }
        #expect(error?.code == 400)
        #expect(
            error?.message.contains("not valid JSON") == true && error?.message.contains("byte") == true,
            "\(String(describing: error))")
    }

    @Test(
        "YAML: several documents, KubeVirt manifests' scalars, quoted strings stay strings; malformed YAML names the line"
    )
    func yaml() throws {
        let documents = try YAML.documents("a: 1\nb: true\nc: \"1\"\nd: 128Mi\ne: null\n---\n---\nx: [1, 2]\n")
        #expect(documents.count == 2)
        #expect(documents[0] == ["a": 1, "b": true, "c": "1", "d": "128Mi", "e": .null])
        #expect(try YAML.document(YAML.text(documents[0])) == documents[0], "YAML output reads back the same")
        let error = #expect(throws: APIError.self) { try YAML.documents("a: [1, 2\nb: c\n") }
        #expect(error?.message.contains("line") == true, "\(String(describing: error))")
    }
}
