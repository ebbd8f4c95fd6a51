import ClusterAPI
import Foundation
import Testing

/// `JSONValue.decode(_:)` and `JSONValue(encoding:)` read and build the tree directly; these tests hold them to the
/// path they replaced (the value written as JSON text and read by Foundation's coders, kept here as `Reference`):
/// every model type, random documents, and the edge cases of numbers, nulls, missing keys and containers.
@Suite("JSON value coders")
struct JSONValueCodingTests {
    // MARK: Model types

    /// One model type and a document of it: decoded both ways, re-encoded both ways, as a resource's typed view.
    struct ModelCase: Sendable, CustomTestStringConvertible {
        let name: String
        let check: @Sendable () throws -> Void

        var testDescription: String { name }

        static func of<T: Codable & Equatable & Sendable>(
            _ type: T.Type, _ document: JSONValue, change: (@Sendable (inout T) -> Void)? = nil
        ) -> ModelCase {
            ModelCase(name: "\(T.self)") {
                try expectSameAsReference(T.self, document)
                if let change {
                    var changed = try document.decode(T.self)
                    change(&changed)
                    #expect(try JSONValue(encoding: changed) == Reference.encode(changed), "\(T.self) changed")
                }
            }
        }

        static func resource<T: Resource>(
            _ type: T.Type, _ document: JSONValue, change: @escaping @Sendable (inout T) -> Void
        ) -> ModelCase {
            ModelCase(name: "\(T.self)") {
                try expectSameAsReference(type, document)
                let typed = try T(json: document)
                #expect(typed == (try Reference.decode(T.self, from: document)))
                #expect(typed.json == (try Reference.encode(typed)))
                var changed = typed
                change(&changed)
                #expect(changed != typed, "the change changes something")
                let (main, status) = typed.patch(to: changed)
                let expected = JSONValue.mergePatch(
                    from: try Reference.encode(typed), to: try Reference.encode(changed))
                var joined = main ?? [:]
                if let status { joined["status"] = status["status"] }
                #expect(joined == expected, "\(T.self): the patch of a change")
                #expect(try T(json: document.merged(with: joined)) == changed, "\(T.self): the patch applied")
            }
        }
    }

    static let modelCases: [ModelCase] = [
        .resource(VirtualMachineInstance.self, Fixtures.virtualMachineInstance) {
            $0.status?.phase = .succeeded
            $0.status?.reason = Migration.migratedAwayReason
            $0.status?.migrationState?.progress?.dataRemainingBytes = 0
            $0.status?.conditions.set(Condition("Ready", false, reason: "Migrated"))
            $0.metadata.add(finalizer: "vmsync.io/test")
        },
        .resource(VirtualMachineInstance.self, Fixtures.sparseInstance) {
            $0.status = .init(phase: .scheduling)
            $0.spec.nodeSelector = ["zone": "b"]
        },
        .resource(VirtualMachineInstanceMigration.self, Fixtures.migration) {
            $0.transition(to: .failed)
            $0.status?.migrationState?.markFailed("aborted", at: "2024-05-01T10:05:00Z", abortStatus: "Succeeded")
            $0.status?.synchronizationDelivery?.failedAttempts = 3
        },
        .resource(VirtualMachine.self, Fixtures.virtualMachine) {
            $0.spec.runStrategy = .halted
            $0.status?.ready = false
        },
        .resource(DataVolume.self, Fixtures.dataVolume) {
            $0.status?.phase = "Succeeded"
            $0.status?.progress = "100.0%"
        },
        .resource(Node.self, Fixtures.node) {
            $0.spec?.unschedulable = true
            $0.status?.capacity?["memory"] = .double(2.5e9 + 0.5)
        },
        .resource(KubeVirt.self, Fixtures.kubeVirt) {
            $0.spec.configuration?.migrations?.parallelMigrationsPerCluster = 9
            $0.spec.configuration?.migrations?.bandwidthPerMigration = .double(1.5)
        },
        .resource(ConfigMap.self, Fixtures.configMap) { $0.data?["ca-bundle"] = nil },
        .resource(StorageClass.self, Fixtures.storageClass) { $0.shared = false },
        .resource(CertificateSigningRequest.self, Fixtures.certificateSigningRequest) {
            $0.status = try? Reference.decode(CertificateSigningRequest.Status.self, from: ["certificate": "Q0VSVA=="])
        },
        .of(MigrationState.self, Fixtures.migrationState) { $0.markFailed("lost", at: nil) },
        .of(VirtualMachineInstance.Status.self, Fixtures.instanceStatus),
        .of(VirtualMachineInstanceSpec.self, Fixtures.instanceSpec),
        .of(KubeVirt.Migrations.self, Fixtures.kubeVirt["spec"]!["configuration"]!["migrations"]!),
        .of(
            ObjectList.self,
            [
                "apiVersion": "v1", "items": [Fixtures.node, Fixtures.storageClass],
                "metadata": ["resourceVersion": "812", "continue": ""],
            ]),
        .of(ObjectHeader.self, Fixtures.virtualMachineInstance),
        .of(ObjectMeta.self, Fixtures.virtualMachineInstance["metadata"]!),
        .of([Condition].self, Fixtures.instanceStatus["conditions"]!),
        .of(KubeVirt.self, ["metadata": ["name": "kubevirt"], "spec": [:]]),
    ]

    @Test("every model type decodes and encodes as through JSON text", arguments: modelCases)
    func modelTypes(_ model: ModelCase) throws {
        try model.check()
    }

    @Test("a model value built in code (defaults, times, nil members) encodes as through JSON text")
    func builtValues() throws {
        let kubeVirt = KubeVirt()
        #expect(kubeVirt.json == (try Reference.encode(kubeVirt)))
        var state = MigrationState()
        state.sourceState = .init()
        state.targetState = .init()
        state.targetState?.directMigrationNodePorts = ["49152": 0, "49153": 49153]
        #expect(try JSONValue(encoding: state) == Reference.encode(state))
        #expect(try JSONValue(encoding: state.sourceState) == Reference.encode(state.sourceState))
        #expect(
            try JSONValue(encoding: MigrationState.SourceState?.none)
                == Reference.encode(MigrationState.SourceState?.none))
        var migration = VirtualMachineInstanceMigration(
            metadata: ObjectMeta(name: "m", namespace: "default"), spec: .init(vmiName: "v"))
        migration.transition(to: .scheduling)
        migration.status?.synchronizationPeer = SynchronizationPeer(
            cluster: "b", caFingerprint: "ab", boundTimestamp: "now")
        migration.status?.migrationState = state
        #expect(migration.json == (try Reference.encode(migration)))
        let status = VirtualMachineInstance.Status(phase: .running, migrationState: state)
        #expect(try JSONValue(encoding: status) == Reference.encode(status))
    }

    @Test("a malformed document fails the same way, and the message names where")
    func modelErrors() throws {
        let documents: [JSONValue] = [
            ["metadata": ["name": "broken"], "spec": ["vmiName": 5]],
            ["metadata": ["name": "broken"], "spec": [:]],
            ["metadata": ["name": "broken"]],
            ["metadata": ["name": "broken", "labels": ["a": 1]], "spec": ["vmiName": "v"]],
            ["metadata": ["name": "broken", "generation": "7"], "spec": ["vmiName": "v"]],
            [
                "metadata": ["name": "broken"], "spec": ["vmiName": "v"],
                "status": ["phaseTransitionTimestamps": [["phase": "Running"]]],
            ],
            [
                "metadata": ["name": "broken"], "spec": ["vmiName": "v"],
                "status": ["conditions": [["type": "A", "status": .null]]],
            ],
            ["metadata": ["name": "broken"], "spec": .null],
            [
                "metadata": ["name": "broken"], "spec": ["vmiName": "v"],
                "status": ["migrationState": ["progress": ["iteration": .double(1.5)]]],
            ],
            [
                "metadata": ["name": "broken"], "spec": ["vmiName": "v"],
                "status": ["migrationState": ["targetDirectMigrationNodePorts": ["a": .double(1e30)]]],
            ],
            [1, 2],
        ]
        for document in documents {
            expectSameOutcome(VirtualMachineInstanceMigration.self, document)
            #expect(throws: APIError.self) { try VirtualMachineInstanceMigration(json: document) }
        }
        do {
            _ = try VirtualMachineInstanceMigration(json: documents[8])
        } catch {
            #expect(error.code == 422)
            #expect(error.message.contains("\"broken\"") && error.message.contains("iteration"), "\(error.message)")
        }
    }

    // MARK: Random documents

    @Test("random documents: decoding a JSONValue is the identity up to the round trip, encoding one matches")
    func randomDocuments() throws {
        var generator = SplitMix64(seed: 0x5EED_0001)
        for index in 0..<1500 {
            let value = randomValue(&generator, nonFinite: index % 3 == 0)
            let decoded = try value.decode(JSONValue.self)
            #expect(decoded == (try Reference.decode(JSONValue.self, from: value)), "\(value)")
            expectSameEncoding(value)
            if let elements = value.array {
                expectSameEncoding(elements)
                #expect(try value.decode([JSONValue].self) == Reference.decode([JSONValue].self, from: value))
            }
            if let members = value.object {
                expectSameEncoding(members)
                #expect(
                    try value.decode([String: JSONValue].self)
                        == Reference.decode([String: JSONValue].self, from: value))
            }
            // Typed readings of a random document: the same values, or both fail (which member fails first
            // follows dictionary order, so only the failing is compared).
            expectSameOutcome([String: String].self, value, anyError: true)
            expectSameOutcome([String].self, value, anyError: true)
            expectSameOutcome([String: Int?].self, value, anyError: true)
            expectSameOutcome([Int64?].self, value, anyError: true)
            expectSameOutcome([Double].self, value, anyError: true)
            expectSameOutcome([String: Float].self, value, anyError: true)
            expectSameOutcome([UInt64].self, value, anyError: true)
        }
    }

    @Test("a value already as it reads back decodes to itself; a whole double becomes an integer as before")
    func identity() throws {
        let value: JSONValue = [
            "int": .int(Int64.min), "fraction": .double(0.1), "big": .double(1e300), "text": "é ✓ 😀 \u{0}",
            "empty": [:], "none": [], "null": .null, "nested": [["a": [.double(-2.5), true]]],
        ]
        #expect(try value.decode(JSONValue.self) == value)
        #expect(try JSONValue(encoding: value) == value)
        let whole: JSONValue = [
            "one": .double(1), "zero": .double(-0.0), "big": .double(1e18), "past": .double(1.152921504606846976e18),
            "nan": .double(.nan), "list": [.double(2), .double(.infinity)],
        ]
        let expected: JSONValue = [
            "one": 1, "zero": 0, "big": .int(1_000_000_000_000_000_000), "past": .int(1_152_921_504_606_847_000),
            "nan": .null, "list": [2, .null],
        ]
        #expect(try whole.decode(JSONValue.self) == expected)
        #expect(try Reference.decode(JSONValue.self, from: whole) == expected)
        #expect(throws: EncodingError.self) { try JSONValue(encoding: whole) }
    }

    // MARK: Scalars

    static let numbers: [JSONValue] = [
        .int(0), .int(1), .int(-1), .int(127), .int(128), .int(255), .int(256), .int(300), .int(-129), .int(65536),
        .int(Int64(Int32.max) + 1), .int(Int64.max), .int(Int64.min), .int(1 << 53), .int((1 << 53) + 1),
        .double(0), .double(-0.0), .double(1), .double(1.5), .double(-1.5), .double(1e3), .double(0.1), .double(1e15),
        .double(1e16), .double(1e18), .double(1e19), .double(1e20), .double(1e300), .double(9_007_199_254_740_994),
        .double(1_152_921_504_606_846_976), .double(9.223372036854775807e18), .double(-9.223372036854775808e18),
        .double(18_446_744_073_709_549_568), .double(18_446_744_073_709_551_616), .double(1e-50),
        .double(.leastNonzeroMagnitude),
        .double(3.4028235e38), .double(3.5e38), .double(.nan), .double(.infinity), .double(-.infinity),
        .null, true, false, "1", "true", "", [], [:], [1], ["a": 1],
    ]

    @Test("a scalar reads as through JSON text into every type, or fails alike", arguments: numbers)
    func scalars(_ value: JSONValue) {
        expectSameOutcome(Int.self, value)
        expectSameOutcome(Int8.self, value)
        expectSameOutcome(Int16.self, value)
        expectSameOutcome(Int32.self, value)
        expectSameOutcome(Int64.self, value)
        expectSameOutcome(Int128.self, value)
        expectSameOutcome(UInt.self, value)
        expectSameOutcome(UInt8.self, value)
        expectSameOutcome(UInt16.self, value)
        expectSameOutcome(UInt32.self, value)
        expectSameOutcome(UInt64.self, value)
        expectSameOutcome(UInt128.self, value)
        expectSameOutcome(Double.self, value)
        expectSameOutcome(Float.self, value)
        expectSameOutcome(Bool.self, value)
        expectSameOutcome(String.self, value)
        expectSameOutcome(Decimal.self, value)
        expectSameOutcome(Date.self, value)
        expectSameOutcome(JSONValue.self, value)
        expectSameOutcome(Int?.self, value)
        expectSameOutcome(Bool?.self, value)
        expectSameOutcome([Int].self, [value, value])
        expectSameOutcome([UInt8?].self, [value])
        expectSameOutcome([String: Int64].self, ["k": value])
        expectSameOutcome([String: Double?].self, ["k": value])
        expectSameOutcome([String: Bool].self, ["k": value])
        expectSameOutcome(Members.self, ["count": value, "flag": value, "text": value, "ratio": value])
        expectSameOutcome(Members.self, ["count": 1, "flag": true, "text": "t", "ratio": value])
        expectSameOutcome(Members.self, ["count": value])
        expectSameOutcome(Members.self, ["flag": value])
        expectSameEncoding(value)
        expectSameEncoding([value])
        expectSameEncoding(["k": value])
    }

    @Test("numbers encode as through JSON text: whole doubles as integers, Float's short digits, large unsigned")
    func encodedNumbers() {
        let doubles: [Double] = [
            0, -0.0, 1, 1.5, -2.25, 0.1, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 9_007_199_254_740_994,
            1_152_921_504_606_846_976, 9.223372036854775807e18, -9.223372036854775808e18, .leastNonzeroMagnitude,
            1.7976931348623157e308,
            .nan, .infinity, -.infinity,
        ]
        for double in doubles {
            expectSameEncoding(double)
            expectSameEncoding(Float(double))
            expectSameEncoding([double, 2])
            expectSameEncoding(["x": double])
            expectSameEncoding(Members(ratio: double))
            expectSameEncoding(Date(timeIntervalSinceReferenceDate: double))
            if double.isFinite { expectSameEncoding(Decimal(double)) }
        }
        for float: Float in [0.1, 16_777_218, 1e10, 3.4e38, .leastNonzeroMagnitude, 0.3333333] {
            expectSameEncoding(float)
        }
        expectSameEncoding(UInt64.max)
        expectSameEncoding(UInt64(1) << 63)
        expectSameEncoding(UInt(Int64.max))
        expectSameEncoding(Int128.max)
        expectSameEncoding(Int128.min)
        expectSameEncoding(UInt128.max)
        expectSameEncoding([Int8.min, Int8.max] as [Int8])
        expectSameEncoding([UInt32(UInt16.max), UInt32.max])
        expectSameEncoding(Int64.min)
        for text in ["12.50", "123.0000000000000000000001", "9007199254740993.5", "1e30", "-0.001"] {
            expectSameEncoding(Decimal(string: text)!)
        }
        expectSameEncoding(Decimal.nan)
    }

    @Test("Foundation's special types: Date as seconds since 2001, Data as base64, URL as a string")
    func specialTypes() {
        expectSameEncoding(Date(timeIntervalSinceReferenceDate: 12.5))
        expectSameEncoding(["at": Date(timeIntervalSince1970: 1_700_000_000)])
        expectSameEncoding(Data([0, 1, 2, 250]))
        expectSameEncoding(Data())
        expectSameEncoding(URL(string: "https://example.com/a?b=c#d")!)
        expectSameEncoding([URL(string: "file:///var/lib/images/disk.qcow2")!])
        for value: JSONValue in ["AAEC+g==", "AAEC+g", "!!", "", .null, 1, .double(.nan)] {
            expectSameOutcome(Data.self, value)
            expectSameOutcome([Data].self, [value])
        }
        for value: JSONValue in ["https://example.com/a", "relative/path", "", "a b", 3, .null] {
            expectSameOutcome(URL.self, value)
        }
        for value: JSONValue in [.double(12.5), 0, .double(-1e9), "yesterday", .null] {
            expectSameOutcome(Date.self, value)
            expectSameOutcome([String: Date].self, ["at": value])
        }
    }

    @Test("a dictionary with integer keys is an object with the numbers as keys")
    func integerKeys() {
        expectSameEncoding([1: "a", 2: "b", -3: "c"])
        expectSameEncoding([Int64.max: [1.5]])
        expectSameOutcome([Int: String].self, ["1": "a", "-2": "b"])
        expectSameOutcome([Int: String].self, ["x": "a"])
        expectSameOutcome([Int: [Double]].self, ["9223372036854775807": [.double(1.5)]])
        expectSameOutcome([Int: String].self, [:])
    }

    // MARK: Optionals, nulls, missing keys

    @Test("optionals: a missing key and null read as nil; nil is left out; encodeNil writes null")
    func optionals() {
        let documents: [JSONValue] = [
            [:], ["count": .null, "flag": .null, "text": .null, "ratio": .null, "nested": .null, "list": .null],
            ["count": 2, "flag": false, "text": "", "ratio": 2, "nested": [["count": 1]], "list": [1, .null, 3]],
            ["count": .double(2), "ratio": .double(.nan), "nested": [], "list": []], ["nested": [:]],
            ["unknown": 1], ["list": [.double(.infinity)]], ["nested": 1], ["list": ["a": 1]],
        ]
        for document in documents {
            expectSameOutcome(Members.self, document)
            expectSameOutcome(Required.self, document)
            expectSameOutcome(Explicit.self, document)
        }
        expectSameEncoding(Members())
        expectSameEncoding(Members(count: 1, flag: true, text: "x", ratio: 0.5, nested: Members(), list: [nil, 2]))
        expectSameEncoding(Explicit(value: nil))
        expectSameEncoding(Explicit(value: 3))
        expectSameEncoding(Int?.none)
        expectSameEncoding([Int?.none])
        expectSameEncoding(["k": Int?.none])
        expectSameEncoding(Nothing())
        expectSameEncoding([Nothing()])
        expectSameEncoding(["k": Nothing()])
    }

    // MARK: Containers

    @Test("hand-written coding: nested containers, super coders, unkeyed positions and the end of an array")
    func containers() throws {
        let document: JSONValue = [
            "outer": ["inner": ["x": 1, "y": ["a", .null, "s"]]],
            "super": ["base": "b"], "custom": ["base": "c"],
            "items": [1, .null, .double(2.5), "x", ["k": 1], [1, 2]],
        ]
        expectSameOutcome(Handwritten.self, document)
        let value = try document.decode(Handwritten.self)
        #expect(value.trace == (try Reference.decode(Handwritten.self, from: document)).trace)
        expectSameEncoding(value)
        expectSameOutcome(Handwritten.self, ["outer": ["inner": 1]])
        expectSameOutcome(Handwritten.self, ["outer": ["inner": ["x": 1, "y": [true]]]])
        expectSameOutcome(Handwritten.self, ["outer": ["inner": ["x": 1, "y": .null]]])
        expectSameOutcome(Handwritten.self, ["outer": ["inner": ["x": 1, "y": []]], "items": []])
        expectSameOutcome(Handwritten.self, ["outer": ["inner": ["x": 1, "y": [1]]], "items": .null])
        expectSameOutcome(Handwritten.self, ["outer": ["inner": ["x": 1, "y": [1]]], "items": [.double(.nan)]])
    }

}

/// The conversions as they were: through JSON text and Foundation's `JSONDecoder` and `JSONEncoder`.
private enum Reference {
    static func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws -> T {
        try JSONDecoder().decode(type, from: value.jsonData())
    }

    static func encode<T: Encodable>(_ value: T) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(value))
    }
}

/// Decoding `document` gives what the reference gives, and so does encoding the result.
private func expectSameAsReference<T: Codable & Equatable>(_ type: T.Type, _ document: JSONValue) throws {
    let reference = try Reference.decode(T.self, from: document)
    let decoded = try document.decode(T.self)
    #expect(decoded == reference, "\(T.self) decoded")
    #expect(try JSONValue(encoding: decoded) == Reference.encode(reference), "\(T.self) encoded")
}

/// Both paths read `value` as the same `T`, or both fail: with the same kind of error at the same path, except
/// that a number the type cannot hold is reported at its own path (Foundation reports it at the top).
private func expectSameOutcome<T: Decodable & Equatable>(
    _ type: T.Type, _ value: JSONValue, anyError: Bool = false,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    let reference = Result { try Reference.decode(T.self, from: value) }
    let direct = Result { try value.decode(T.self) }
    switch (reference, direct) {
    case (.success(let expected), .success(let decoded)):
        #expect(decoded == expected, "\(T.self) from \(value)", sourceLocation: sourceLocation)
    case (.failure(let expected), .failure(let error)):
        guard !anyError else { return }
        let (expectedKind, expectedPath) = describe(expected)
        let (kind, path) = describe(error)
        #expect(
            kind == expectedKind, "\(T.self) from \(value): \(error) for \(expected)",
            sourceLocation: sourceLocation)
        if kind != "dataCorrupted" {
            #expect(
                path == expectedPath, "\(T.self) from \(value): \(error) for \(expected)",
                sourceLocation: sourceLocation)
        }
    default:
        Issue.record("\(T.self) from \(value): \(direct), as before \(reference)", sourceLocation: sourceLocation)
    }
}

/// Both paths encode `value` to the same `JSONValue`, or both fail.
private func expectSameEncoding<T: Encodable>(_ value: T, sourceLocation: SourceLocation = #_sourceLocation) {
    let reference = Result { try Reference.encode(value) }
    let direct = Result { try JSONValue(encoding: value) }
    switch (reference, direct) {
    case (.success(let expected), .success(let encoded)):
        #expect(encoded == expected, "\(T.self) \(value)", sourceLocation: sourceLocation)
    case (.failure(let expected), .failure(let error)):
        if expected is EncodingError {
            #expect(error is EncodingError, "\(value): \(error) for \(expected)", sourceLocation: sourceLocation)
        }
    default:
        Issue.record("\(T.self) \(value): \(direct), as before \(reference)", sourceLocation: sourceLocation)
    }
}

/// The kind of a decoding error and the string values of its coding path.
private func describe(_ error: any Error) -> (kind: String, path: [String]) {
    switch error as? DecodingError {
    case .typeMismatch(_, let context)?: ("typeMismatch", context.codingPath.map(\.stringValue))
    case .valueNotFound(_, let context)?: ("valueNotFound", context.codingPath.map(\.stringValue))
    case .keyNotFound(let key, let context)?:
        ("keyNotFound", context.codingPath.map(\.stringValue) + [key.stringValue])
    case .dataCorrupted(let context)?: ("dataCorrupted", context.codingPath.map(\.stringValue))
    default: ("\(type(of: error))", [])
    }
}

/// A pseudo-random document: every kind of value, whole and fractional doubles of every size, integers of the
/// whole range, strings with escapes, combining marks and emoji, empty arrays and objects.
private func randomValue(
    _ generator: inout SplitMix64, depth: Int = 0, nonFinite: Bool
) -> JSONValue {
    switch Int.random(in: 0..<(depth > 4 ? 6 : 9), using: &generator) {
    case 0: return .null
    case 1: return .bool(Bool.random(using: &generator))
    case 2: return .int(Int64.random(in: Int64.min...Int64.max, using: &generator))
    case 3: return .int(Int64.random(in: -300...300, using: &generator))
    case 4:
        if nonFinite && Int.random(in: 0..<20, using: &generator) == 0 {
            return .double([.nan, .infinity, -.infinity].randomElement(using: &generator)!)
        }
        let number = randomDouble(&generator)
        return .double(number.isFinite ? number : 1.5)
    case 5: return .string(randomString(&generator))
    case 6, 7:
        return .array(
            (0..<Int.random(in: 0..<5, using: &generator)).map { _ in
                randomValue(&generator, depth: depth + 1, nonFinite: nonFinite)
            })
    default:
        return .object(
            Dictionary(
                (0..<Int.random(in: 0..<5, using: &generator)).map { _ in
                    (randomString(&generator), randomValue(&generator, depth: depth + 1, nonFinite: nonFinite))
                }, uniquingKeysWith: { first, _ in first }))
    }
}

private func randomDouble(_ generator: inout SplitMix64) -> Double {
    switch Int.random(in: 0..<10, using: &generator) {
    case 0: return Double(Int.random(in: -1000...1000, using: &generator))
    case 1: return Double(Int64.random(in: Int64.min...Int64.max, using: &generator))
    case 2: return Double(bitPattern: UInt64.random(in: 0...UInt64.max, using: &generator))
    case 3: return Double.random(in: -1e6...1e6, using: &generator)
    case 4:
        return Double(Int.random(in: -1000...1000, using: &generator)) / [2, 4, 10, 1000].randomElement(
            using: &generator)!
    case 5:
        return [
            0.0, -0.0, 1e300, .leastNonzeroMagnitude, 1e-50, 9_007_199_254_740_992, 9_007_199_254_740_994, 1e19,
            -9.223372036854775808e18,
        ]
        .randomElement(using: &generator)!
    case 6:
        return Double(
            sign: .plus, exponent: Int.random(in: 50...70, using: &generator),
            significand: Double.random(in: 1..<2, using: &generator)
        ).rounded()
    case 7: return Double(UInt64.random(in: 0...UInt64.max, using: &generator))
    case 8:
        return Double.random(in: 0..<1, using: &generator)
            * pow(10, Double(Int.random(in: -30...30, using: &generator)))
    default: return Double(Int64.random(in: -(1 << 53)...(1 << 53), using: &generator))
    }
}

private let characters = Array("aZ0 _-/\"\\\n\té✓😀\u{0}\u{1}\u{7f}e\u{301}한🇨🇦")

private func randomString(_ generator: inout SplitMix64) -> String {
    String(
        (0..<Int.random(in: 0..<10, using: &generator)).map { _ in characters.randomElement(using: &generator)! })
}

/// A seeded generator (SplitMix64): the random documents are the same on every run.
private struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }
}

/// Synthesized coding of optional members of several types.
private struct Members: Codable, Equatable {
    var count: Int?
    var flag: Bool?
    var text: String?
    var ratio: Double?
    var nested: [Members]?
    var list: [Int?]?

    init(
        count: Int? = nil, flag: Bool? = nil, text: String? = nil, ratio: Double? = nil, nested: Members? = nil,
        list: [Int?]? = nil
    ) {
        self.count = count
        self.flag = flag
        self.text = text
        self.ratio = ratio
        self.nested = nested.map { [$0] }
        self.list = list
    }
}

/// Synthesized coding of members that must be there.
private struct Required: Codable, Equatable {
    var count: Int
    var text: String
}

/// Members written with `encodeNil` and read with `decodeNil`.
private struct Explicit: Codable, Equatable {
    var value: Int?

    enum CodingKeys: String, CodingKey {
        case value
    }

    init(value: Int?) {
        self.value = value
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if container.contains(.value), try !container.decodeNil(forKey: .value) {
            value = try container.decode(Int.self, forKey: .value)
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        if let value { try container.encode(value, forKey: .value) } else { try container.encodeNil(forKey: .value) }
    }
}

/// A value that encodes nothing at all.
private struct Nothing: Encodable {
    func encode(to encoder: any Encoder) throws {}
}

/// Coding by hand through every kind of container, recording what the containers said on the way.
private struct Handwritten: Codable, Equatable {
    var x = 0
    var y: [String?] = []
    var base = ""
    var custom = ""
    var items: [JSONValue] = []
    var trace: [String] = []

    enum Keys: String, CodingKey {
        case outer, inner, x, y, custom, items
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        trace.append("keys \(container.allKeys.map(\.stringValue).sorted())")
        let outer = try container.nestedContainer(keyedBy: Keys.self, forKey: .outer)
        let inner = try outer.nestedContainer(keyedBy: Keys.self, forKey: .inner)
        x = try inner.decode(Int.self, forKey: .x)
        var list = try inner.nestedUnkeyedContainer(forKey: .y)
        trace.append("count \(list.count ?? -1) at end \(list.isAtEnd)")
        while !list.isAtEnd {
            if try list.decodeNil() {
                y.append(nil)
            } else {
                y.append(try list.decode(String.self))
            }
            trace.append("index \(list.currentIndex)")
        }
        trace.append("past the end: \(String(describing: try list.decodeIfPresent(String.self))) \(list.currentIndex)")
        base = try container.superDecoder().container(keyedBy: JSONKey.self).decode(
            String.self, forKey: JSONKey(stringValue: "base"))
        let customDecoder = try container.superDecoder(forKey: .custom)
        trace.append("super path \(customDecoder.codingPath.map(\.stringValue))")
        custom = try customDecoder.singleValueContainer().decode([String: String].self)["base"] ?? ""
        if container.contains(.items) {
            var elements = try container.nestedUnkeyedContainer(forKey: .items)
            while !elements.isAtEnd {
                trace.append("path \(elements.codingPath.map(\.stringValue)) at \(elements.currentIndex)")
                if let number = try? elements.decode(Double.self) {
                    items.append(.double(number))
                } else if try elements.decodeNil() {
                    items.append(.null)
                } else if let text = try? elements.decode(String.self) {
                    items.append(.string(text))
                } else if var nested = try? elements.nestedUnkeyedContainer() {
                    trace.append("nested count \(nested.count ?? -1)")
                    while !nested.isAtEnd { items.append(.int(try nested.decode(Int64.self))) }
                } else {
                    let keyed = try elements.nestedContainer(keyedBy: JSONKey.self)
                    items.append(
                        .object(
                            try Dictionary(
                                uniqueKeysWithValues: keyed.allKeys.map {
                                    ($0.stringValue, try keyed.decode(JSONValue.self, forKey: $0))
                                })))
                }
            }
            trace.append("items end \(String(describing: try? elements.decode(Int.self)))")
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        var outer = container.nestedContainer(keyedBy: Keys.self, forKey: .outer)
        var inner = outer.nestedContainer(keyedBy: Keys.self, forKey: .inner)
        try inner.encode(x, forKey: .x)
        var list = inner.nestedUnkeyedContainer(forKey: .y)
        for element in y {
            if let element { try list.encode(element) } else { try list.encodeNil() }
        }
        var again = container.nestedContainer(keyedBy: Keys.self, forKey: .outer)
        try again.encode(trace.count, forKey: .x)
        try base.encode(to: container.superEncoder())
        var custom = container.superEncoder(forKey: .custom).container(keyedBy: Keys.self)
        try custom.encode(self.custom, forKey: .x)
        var elements = container.nestedUnkeyedContainer(forKey: .items)
        try elements.encode(1.5)
        var nested = elements.nestedUnkeyedContainer()
        try nested.encode(Int8(3))
        try nested.encode(UInt64.max)
        var keyed = elements.nestedContainer(keyedBy: Keys.self)
        try keyed.encode(Float(0.1), forKey: .x)
        try elements.encode(true)
        try "inserted".encode(to: elements.superEncoder())
        try elements.encodeNil()
        for item in items { try elements.encode(item) }
        var single = container.superEncoder(forKey: .y).singleValueContainer()
        try single.encode(["trace": trace])
    }
}

/// Any member name, for reading objects of unknown shape.
private struct JSONKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }

    init(stringValue: String) {
        self.stringValue = stringValue
    }

    init?(intValue: Int) { nil }
}

/// Full documents of every kind, filled the way the cluster fills them: nested status and migration state,
/// conditions, timestamps, quantities as strings and numbers, whole numbers written as doubles (`2.0`), explicit nulls
/// and fields the model does not know.
private enum Fixtures {
    static let migrationState: JSONValue = [
        "migrationUid": "6d3f0a52-1c1e-4c55-9f53-0a3c8f2d9e11", "migrationUID": "6d3f0a52-1c1e-4c55-9f53-0a3c8f2d9e11",
        "sourceNode": "node-a1", "targetNode": "node-b2", "sourcePod": "virt-launcher-vm-a-x7k2p",
        "targetPod": .null, "targetNodeAddress": "10.0.2.15",
        "targetDirectMigrationNodePorts": ["49152": 0, "49153": .double(49153), "49154": 49154],
        "targetNodeDomainDetected": true, "targetNodeDomainReadyTimestamp": "2024-05-01T10:01:02Z", "mode": "PreCopy",
        "startTimestamp": "2024-05-01T10:01:00Z", "endTimestamp": .null, "completed": false, "failed": false,
        "abortRequested": false, "abortStatus": .null, "failureReason": "",
        "migrationConfiguration": [
            "bandwidthPerMigration": "64Mi", "completionTimeoutPerGiB": .double(150), "progressTimeout": 150,
            "allowAutoConverge": false, "allowPostCopy": true, "ratio": .double(0.75), "huge": .double(1e20),
            "past": .double(1.152921504606846976e18), "nothing": .null, "list": [.double(1), 2, "three"],
        ],
        "progress": [
            "phase": "Memory", "iteration": 3, "elapsedMilliseconds": .double(5123),
            "dataTotalBytes": .double(1.2884901888e10),
            "dataProcessedBytes": 6_442_450_944, "dataRemainingBytes": 6_442_450_944,
            "memoryDirtyRateBytesPerSecond": 1_048_576, "memoryBytesPerSecond": .double(1.25e9),
            "diskTotalBytes": 10_737_418_240, "diskProcessedBytes": 0, "unknownFigure": .double(0.5),
        ],
        "targetRunDirectory": "/var/run/vmsync/default_vm-a", "libvirtJobStartTimestamp": "2024-05-01T10:01:03Z",
        "libvirtJobEndTimestamp": .null, "downtimeMilliseconds": .double(42),
        "sourceState": [
            "node": "node-a1", "pod": "virt-launcher-vm-a-x7k2p", "migrationUID": "6d3f0a52",
            "domainName": "default_vm-a", "domainNamespace": "default", "syncAddress": "sync.a.example:9185",
            "persistentStatePVCName": "", "selinuxContext": "system_u:object_r:container_file_t:s0",
            "virtualMachineInstanceUID": "2b9d", "nodeSelectors": ["kubernetes.io/hostname": "node-a1"],
            "domainUUID": "2F9C7D0E-0000-4000-8000-000000000001", "futureField": ["x": [1, 2]],
        ],
        "targetState": [
            "node": "node-b2", "pod": .null, "migrationUID": "6d3f0a52", "domainName": "default_vm-a",
            "domainNamespace": "default", "syncAddress": "sync.b.example:9185", "virtualMachineInstanceUID": "9c1e",
            "nodeAddress": "10.0.3.7", "directMigrationNodePorts": ["49152": 0, "49155": .double(49155)],
            "domainDetected": true, "domainReadyTimestamp": "2024-05-01T10:01:02Z", "attachmentPodUID": "",
            "runDirectory": "/var/run/vmsync/default_vm-a",
            "disks": ["vda": "/images/vm-a.qcow2", "vdb": "/run/seed.iso"],
            "gateway": "gw.b.example:9186",
        ],
        "unknownFlag": true,
    ]

    static let conditions: JSONValue = [
        [
            "type": "Ready", "status": "True", "reason": "", "message": "", "lastProbeTime": .null,
            "lastTransitionTime": "2024-05-01T10:00:10Z",
        ],
        [
            "type": "LiveMigratable", "status": "False", "reason": "DisksNotLiveMigratable",
            "message":
                "cannot migrate VMI: PVC disk0 is not shared, live migration requires that all PVCs must be shared",
            "lastTransitionTime": "2024-05-01T10:00:00Z", "lastHeartbeatTime": "2024-05-01T10:00:30Z",
        ],
        ["type": "Paused", "status": "Maybe", "drainStarted": "2024-05-01T10:02:00Z", "severity": "Info"],
    ]

    static let instanceSpec: JSONValue = [
        "domain": [
            "cpu": [
                "model": "host-model", "cores": 2, "sockets": .double(1), "threads": 1,
                "features": [["name": "pcid", "policy": "require"]], "dedicatedCpuPlacement": false,
            ],
            "memory": ["guest": "1Gi", "hugepages": ["pageSize": "2Mi"]],
            "resources": [
                "requests": ["memory": "1Gi", "cpu": .double(0.5), "ephemeral-storage": 0],
                "limits": ["cpu": 2, "memory": .double(1_073_741_824)],
            ],
            "devices": [
                "disks": [
                    ["name": "disk0", "disk": ["bus": "virtio", "readonly": false], "bootOrder": 1],
                    ["name": "cloudinit", "cdrom": ["bus": "sata", "readonly": true]],
                    ["name": "scratch", "disk": [:], "cache": "none"],
                ],
                "interfaces": [
                    [
                        "name": "default", "masquerade": [:], "macAddress": "52:54:00:12:34:56", "model": "virtio",
                        "ports": [["port": 22]],
                    ],
                    ["name": "br", "bridge": [:]], ["name": "vf", "sriov": ["x": .null]],
                ],
                "hostDevices": [["name": "gpu0", "deviceName": "nvidia.com/GA102"]], "gpus": [],
                "autoattachGraphicsDevice": false, "rng": [:],
            ],
            "firmware": [
                "uuid": "2F9C7D0E-0000-4000-8000-000000000001", "serial": "e4686d2c",
                "kernelBoot": [
                    "kernelArgs": "console=ttyS0",
                    "container": [
                        "image": "quay.io/kernel:6.1", "kernelPath": "/boot/vmlinuz", "initrdPath": "/boot/initrd",
                        "imagePullPolicy": "IfNotPresent",
                    ],
                ],
                "bootloader": ["efi": ["secureBoot": false]],
            ],
            "machine": ["type": "q35"], "features": ["acpi": [:]],
        ],
        "nodeSelector": ["kubernetes.io/arch": "amd64", "vmsync.io/zone": "b"],
        "affinity": [
            "nodeAffinity": [
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    "nodeSelectorTerms": [
                        [
                            "matchExpressions": [
                                ["key": "zone", "operator": "In", "values": ["a", "b"]],
                                ["key": "gpu", "operator": "Exists"],
                            ]
                        ]
                    ]
                ],
                "preferredDuringSchedulingIgnoredDuringExecution": [["weight": 1]],
            ],
            "podAntiAffinity": [:],
        ],
        "tolerations": [
            ["key": "vmsync.io/drain", "operator": "Exists", "effect": "NoSchedule"],
            ["operator": "Exists", "tolerationSeconds": 300], ["key": "k", "value": "v", "effect": .null],
        ],
        "volumes": [
            ["name": "disk0", "dataVolume": ["name": "vm-a-dv", "hotpluggable": false]],
            ["name": "claim", "persistentVolumeClaim": ["claimName": "pvc-1", "readOnly": true]],
            ["name": "scratch", "emptyDisk": ["capacity": "2Gi"]],
            ["name": "scratch2", "emptyDisk": ["capacity": .double(1e9)]],
            [
                "name": "cloudinit",
                "cloudInitNoCloud": ["userData": "#cloud-config\npassword: x\n", "networkData": "version: 2"],
            ],
            ["name": "cd", "containerDisk": ["image": "quay.io/containerdisks/fedora:40"]],
        ],
        "networks": [["name": "default", "pod": [:]], ["name": "vlan", "multus": ["networkName": "vlan10"]]],
        "terminationGracePeriodSeconds": 30, "evictionStrategy": "LiveMigrate", "architecture": "amd64",
    ]

    static let instanceStatus: JSONValue = [
        "phase": "Running", "reason": .null, "nodeName": "node-a1", "conditions": conditions,
        "migrationState": migrationState, "migrationMethod": "BlockMigration", "migrationTransport": "Unix",
        "migratedVolumes": [
            [
                "volumeName": "disk0",
                "sourcePVCInfo": ["claimName": "vm-a-dv", "volumeMode": "Filesystem", "requests": ["storage": "10Gi"]],
                "destinationPVCInfo": ["claimName": "vm-a-dv", "accessModes": ["ReadWriteOnce"]],
            ]
        ],
        "printableMigration": "Migrating", "evacuationNodeName": "node-a1",
        "volumeStatus": [
            [
                "name": "disk0", "phase": "Ready", "reason": "VolumeReady", "target": "vda",
                "persistentVolumeClaimInfo": [
                    "claimName": "vm-a-dv", "capacity": ["storage": "10Gi", "bytes": .double(10_737_418_240)],
                    "shared": false, "storageClass": "local", "path": "/images/vm-a.qcow2",
                    "accessModes": ["ReadWriteOnce"],
                ],
            ],
            ["name": "cloudinit", "size": 1_048_576],
        ],
        "message": "running on node-a1 ✓", "launcherDomain": "default_vm-a",
        "interfaces": [
            [
                "name": "default", "mac": "52:54:00:12:34:56", "infoSource": "domain, guest-agent",
                "queueCount": .double(1), "ipAddress": "10.0.2.2", "ipAddresses": ["10.0.2.2", "fd10:0:2::2"],
                "interfaceName": "eth0",
            ]
        ],
        "guestOSInfo": [
            "id": "fedora", "name": "Fedora Linux", "version": "40", "kernelRelease": "6.8.5", "score": .double(0.5),
        ],
        "serialConsole": "/var/run/vmsync/default_vm-a/serial.sock", "qosClass": "Burstable",
        "activePods": ["5a1b": "node-a1"], "currentCPUTopology": ["cores": 2, "sockets": 1, "threads": 1],
    ]

    static let metadata: JSONValue = [
        "name": "vm-a", "namespace": "default", "uid": "2b9d6c1e-8a8f-4f52-9d0e-5b1c7e0e6a01",
        "resourceVersion": "1234", "generation": .double(3), "creationTimestamp": "2024-05-01T10:00:00Z",
        "deletionTimestamp": .null, "generateName": "vm-",
        "labels": ["kubevirt.io/vm": "vm-a", "app": "db", "kubevirt.io/nodeName": "node-a1"],
        "annotations": ["kubevirt.io/latest-observed-api-version": "v1", "note": "é ✓ 😀 \"quoted\"\n"],
        "finalizers": ["kubevirt.io/virtualMachineControllerFinalize", "foregroundDeleteVirtualMachine"],
        "ownerReferences": [
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "vm-a", "uid": "u-vm",
                "controller": true, "blockOwnerDeletion": true,
            ]
        ],
        "managedFields": [["manager": "virt-controller", "operation": "Update", "time": "2024-05-01T10:00:00Z"]],
    ]

    static let virtualMachineInstance: JSONValue = [
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": metadata, "spec": instanceSpec,
        "status": instanceStatus,
    ]

    static let sparseInstance: JSONValue = ["metadata": ["name": "bare"], "spec": [:]]

    static let migration: JSONValue = [
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
        "metadata": [
            "name": "migrate-vm-a", "namespace": "default", "uid": "6d3f0a52", "resourceVersion": "2001",
            "creationTimestamp": "2024-05-01T10:00:59Z",
            "finalizers": ["synchronization.kubevirt.io/migrationFinalizer"],
            "labels": ["kubevirt.io/vmi-name": "vm-a"],
        ],
        "spec": [
            "vmiName": "vm-a", "addedNodeSelector": ["vmsync.io/zone": "b"],
            "sendTo": ["migrationID": "mig-1", "connectURL": "sync.b.example:9185"],
            "receive": ["migrationID": "mig-1"], "futureSpec": 1,
        ],
        "status": [
            "phase": "FromTheFuture", "conditions": conditions, "migrationState": migrationState,
            "phaseTransitionTimestamps": [
                ["phase": "Pending", "phaseTransitionTimestamp": "2024-05-01T10:00:59Z"],
                ["phase": "Scheduling", "phaseTransitionTimestamp": "2024-05-01T10:01:00Z"],
                ["phase": "Lost", "phaseTransitionTimestamp": "2024-05-01T10:01:01Z"],
            ],
            "synchronizationAddresses": ["sync.a.example:9185", "10.0.2.15:9185"],
            "synchronizationPeer": [
                "cluster": "cluster-b", "caFingerprint": "9f86d081884c7d65", "address": "10.0.3.1",
                "boundTimestamp": "2024-05-01T10:01:00Z",
            ],
            "synchronizationDelivery": [
                "deliveredDigest": "e3b0c442", "deliveredTimestamp": "2024-05-01T10:01:04Z",
                "peerAddress": "sync.b.example:9185", "failedAttempts": .double(2), "lastError": .null,
                "lastAttemptTimestamp": "2024-05-01T10:01:03Z",
            ],
        ],
    ]

    static let virtualMachine: JSONValue = [
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": metadata,
        "spec": [
            "runStrategy": "WaitAsReceiver", "running": .null, "dataVolumeTemplates": [["metadata": ["name": "dv"]]],
            "template": [
                "metadata": ["creationTimestamp": .null, "labels": ["kubevirt.io/vm": "vm-a"]], "spec": instanceSpec,
            ],
        ],
        "status": [
            "printableStatus": "Running", "ready": true, "created": true, "startedOnce": true, "conditions": conditions,
            "volumeSnapshotStatuses": [["name": "disk0", "enabled": false]],
        ],
    ]

    static let dataVolume: JSONValue = [
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": [
            "name": "vm-a-dv", "namespace": "default", "annotations": ["cdi.kubevirt.io/storage.usePopulator": "true"],
        ],
        "spec": [
            "source": [
                "blank": [:], "http": ["url": "file:///images/import/fedora.qcow2", "secretRef": "s"], "pvc": .null,
                "registry": ["url": "docker://quay.io/x"], "upload": [:],
            ],
            "storage": [
                "storageClassName": "local", "accessModes": ["ReadWriteOnce"],
                "resources": ["requests": ["storage": "10Gi"], "limits": ["storage": .double(2e10)]],
            ],
            "pvc": ["accessModes": ["ReadWriteMany"], "resources": ["requests": ["storage": 1_073_741_824]]],
            "preallocation": false,
        ],
        "status": [
            "phase": "ImportInProgress", "progress": "45.5%", "nodeName": "node-a1", "path": "/images/vm-a-dv.qcow2",
            "restartCount": 0, "conditions": conditions,
        ],
    ]

    static let node: JSONValue = [
        "apiVersion": "v1", "kind": "Node",
        "metadata": [
            "name": "node-a1", "uid": "n-1", "resourceVersion": "77",
            "labels": ["kubernetes.io/hostname": "node-a1", "zone": "a", "cpu-model.node.kubevirt.io/Skylake": "true"],
        ],
        "spec": [
            "taints": [
                ["key": "vmsync.io/drain", "effect": "NoSchedule", "timeAdded": "2024-05-01T10:00:00Z"],
                ["key": "dedicated", "value": "db", "effect": "NoExecute"],
            ],
            "unschedulable": false, "podCIDR": "10.244.0.0/24",
        ],
        "status": [
            "conditions": conditions, "printableStatus": "Ready",
            "allocatable": ["memory": "15Gi", "cpu": 8, "devices.kubevirt.io/kvm": "1k", "hugepages-2Mi": .double(0)],
            "capacity": ["memory": .double(16_777_216_000), "cpu": .double(8.5), "pods": 110],
            "tunnelEndpoint": "10.0.2.15:9443",
            "addresses": [
                ["type": "InternalIP", "address": "10.0.2.15"], ["type": "Hostname", "address": "node-a1"],
            ],
            "nodeInfo": ["architecture": "amd64", "kernelVersion": "6.1.0", "bootID": "b-1", "cpus": .double(8)],
            "libvirtURI": "qemu:///system", "runDirectory": "/var/run/vmsync",
        ],
    ]

    static let kubeVirt: JSONValue = [
        "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
        "metadata": ["name": "kubevirt", "namespace": "kubevirt", "generation": 4],
        "spec": [
            "configuration": [
                "migrations": [
                    "bandwidthPerMigration": "0Mi", "completionTimeoutPerGiB": .double(150), "progressTimeout": 150,
                    "parallelMigrationsPerCluster": 5, "parallelOutboundMigrationsPerNode": .double(2),
                    "allowAutoConverge": false, "allowPostCopy": .null, "unschedulableTimeoutSeconds": 300,
                    "targetReadyTimeoutSeconds": .double(120), "maxDowntimeMilliseconds": 300,
                    "initialDowntimeMilliseconds": .double(50), "parallelMigrationConnections": 4,
                    "allowUnsafeLiveMemoryCopy": true, "matchSELinuxLevelOnMigration": true,
                ],
                "cpuModel": "Skylake-Client-IBRS",
                "developerConfiguration": [
                    "featureGates": ["DecentralizedLiveMigration", "LiveMigration"],
                    "logVerbosity": ["virtLauncher": 2],
                ],
                "evictionStrategy": "LiveMigrate", "crossClusterGateway": "gw.b.example:9186",
            ],
            "certificateRotateStrategy": [:], "workloadUpdateStrategy": ["workloadUpdateMethods": ["LiveMigrate"]],
        ],
        "status": ["phase": "Deployed"],
    ]

    static let configMap: JSONValue = [
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": [
            "name": "kubevirt-ca", "namespace": "kubevirt", "annotations": ["vmsync.io/last-merge": "added 1\nkept 2"],
        ],
        "data": ["ca-bundle": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "empty": ""],
        "binaryData": ["blob": "AAEC"],
    ]

    static let storageClass: JSONValue = [
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": ["name": "local", "annotations": ["storageclass.kubernetes.io/is-default-class": "true"]],
        "provisioner": "vmsync.io/directory", "directory": "/var/lib/vmsync/images", "shared": true,
        "parameters": ["type": "qcow2"], "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer",
    ]

    static let certificateSigningRequest: JSONValue = [
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": ["name": "node-a1-1714557600", "creationTimestamp": "2024-05-01T10:00:00Z"],
        "spec": [
            "request": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K", "signerName": "vmsync.io/node",
            "usages": ["digital signature", "key encipherment", "client auth"], "expirationSeconds": .double(86400),
            "username": "system:node:node-a1", "groups": ["system:nodes"], "extra": [:],
        ],
        "status": [
            "certificate": .null,
            "conditions": [
                [
                    "type": "Approved", "status": "True", "reason": "AutoApproved",
                    "message": "approved by vmsync", "lastUpdateTime": "2024-05-01T10:00:01Z",
                ]
            ],
        ],
    ]
}
