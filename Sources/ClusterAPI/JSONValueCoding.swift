import Foundation

// A `Decoder` that reads a `JSONValue` tree and an `Encoder` that builds one, without JSON text in between. Their
// results and errors are those of the path they replace — the value written as compact JSON and read by Foundation's
// `JSONDecoder`, a value encoded by `JSONEncoder` and read back as a `JSONValue` — down to how numbers change on the
// way (`JSONNumberRules`), since stored objects, merge patches and comparisons of values depend on it. The differences:
// a number a type cannot hold is a `dataCorrupted` error at its own coding path (JSONDecoder reports it at the top
// level, as invalid JSON), and nesting deeper than JSONDecoder's 512 levels is not refused.

// MARK: Numbers

/// What Foundation's JSON coders make of a number `JSONValue` holds once it is written as JSON text and read back.
/// JSON text has one kind of number: a double is written as its description (a whole one without `.0`) and read as an
/// integer whenever the text converts to one, the way `JSONDecoder` converts it.
enum JSONNumberRules {
    /// 2^53: every whole double below it is an exact integer, which JSONDecoder takes as it is; above it JSONDecoder
    /// reads the integer from the digits of the text, which may differ from the double's exact value.
    static let exactIntegerLimit = 9_007_199_254_740_992.0

    /// The text JSON writers give a finite number: its description without a trailing `.0`.
    static func text<F: BinaryFloatingPoint & CustomStringConvertible>(_ number: F) -> String {
        var text = number.description
        if text.hasSuffix(".0") { text.removeLast(2) }
        return text
    }

    /// A finite double as it reads back: an integer when whole and in Int64's range, else itself.
    static func value(_ number: Double) -> JSONValue {
        guard number.rounded(.towardZero) == number else { return .double(number) }
        if number.magnitude < exactIntegerLimit { return .int(Int64(number)) }
        return value(text: text(number)) ?? .double(number)
    }

    /// The value `JSONValue(from:)` reads from number text through JSONDecoder: an Int64 when the text converts to
    /// one, else a double (nil for text that is no finite number).
    static func value(text: String) -> JSONValue? {
        if let integer: Int64 = integer(text: text) { return .int(integer) }
        guard let number = Double(text), number.isFinite else { return nil }
        return .double(number)
    }

    /// A finite double as JSONDecoder converts its text to an integer type; nil when the type cannot hold it.
    static func integer<T: FixedWidthInteger>(_ number: Double) -> T? {
        guard number.rounded(.towardZero) == number else { return nil }
        if number.magnitude < exactIntegerLimit { return T(exactly: Int64(number)) }
        return integer(text: text(number))
    }

    /// Number text as JSONDecoder converts it to an integer type: the digits when they are an integer it can hold,
    /// else through the double the text reads as (exact below 2^53) or the decimal it reads as (above).
    static func integer<T: FixedWidthInteger>(text: String) -> T? {
        if let integer = T(text) { return integer }
        guard let number = Double(text), let integer = T(exactly: number) else { return nil }
        if number.magnitude < exactIntegerLimit { return integer }
        return decimalInteger(text: text)
    }

    /// Number text read as Foundation's `Decimal` and converted to an integer type as JSONDecoder converts it: the
    /// significant digits (trailing zeros dropped) must fit 64 bits, a fraction is cut off.
    static func decimalInteger<T: FixedWidthInteger>(text: String) -> T? {
        var bytes = text.utf8[...]
        let negative = bytes.first == UInt8(ascii: "-")
        if negative || bytes.first == UInt8(ascii: "+") { bytes = bytes.dropFirst() }
        var digits: [UInt8] = []
        var exponent = 0
        var inFraction = false
        while let byte = bytes.first {
            if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
                if !(digits.isEmpty && byte == UInt8(ascii: "0")) { digits.append(byte - UInt8(ascii: "0")) }
                if inFraction { exponent -= 1 }
            } else if byte == UInt8(ascii: "."), !inFraction {
                inFraction = true
            } else {
                break
            }
            bytes = bytes.dropFirst()
        }
        if let marker = bytes.first, marker == UInt8(ascii: "e") || marker == UInt8(ascii: "E") {
            guard let written = Int(String(decoding: bytes.dropFirst(), as: UTF8.self)) else { return nil }
            exponent += written
        } else if !bytes.isEmpty {
            return nil
        }
        guard exponent >= Int(Int8.min), exponent <= Int(Int8.max) else { return nil }
        while digits.last == 0 {
            digits.removeLast()
            exponent += 1
        }
        var magnitude: UInt64 = 0
        for digit in digits {
            let (shifted, overflow) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, carry) = shifted.addingReportingOverflow(UInt64(digit))
            guard !overflow, !carry else { return nil }
            magnitude = sum
        }
        if exponent < 0 {
            for _ in 0 ..< -exponent { magnitude /= 10 }
        } else {
            for _ in 0..<exponent {
                let (shifted, overflow) = magnitude.multipliedReportingOverflow(by: 10)
                guard !overflow else { return nil }
                magnitude = shifted
            }
        }
        guard !negative else {
            guard T.isSigned, let value = T(exactly: magnitude) else { return nil }
            return value * -1
        }
        return T(exactly: magnitude)
    }

    /// Number text as JSONDecoder converts it to a Float: nil when it overflows or rounds to zero.
    static func float(text: String) -> Float? {
        guard let number = Float(text), number.isFinite else { return nil }
        if number == 0 {
            for byte in text.utf8 {
                if byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E") { break }
                if byte >= UInt8(ascii: "1") && byte <= UInt8(ascii: "9") { return nil }
            }
        }
        return number
    }

    /// The JSON text of a number `JSONValue` holds (nil for the others).
    static func text(of value: JSONValue) -> String? {
        switch value {
        case .int(let number): String(number)
        case .double(let number) where number.isFinite: text(number)
        default: nil
        }
    }

    /// The value of an integer as JSONEncoder writes it and `JSONValue(from:)` reads it back.
    static func value<T: FixedWidthInteger>(integer: T) -> JSONValue {
        if let number = Int64(exactly: integer) { return .int(number) }
        return value(text: String(integer)) ?? .null
    }
}

extension JSONValue {
    /// Whether the value reads as null: `null`, or a double JSON cannot hold (written as null).
    fileprivate var readsAsNull: Bool {
        switch self {
        case .null: true
        case .double(let number): !number.isFinite
        default: false
        }
    }

    /// How JSONDecoder names the kind of a value in its messages.
    fileprivate var kindDescription: String {
        switch self {
        case .string: "a string"
        case .int, .double: readsAsNull ? "null" : "number"
        case .bool: "bool"
        case .null: "null"
        case .object: "a dictionary"
        case .array: "an array"
        }
    }

    /// The value with its numbers as they read back from JSON text (whole doubles as integers), nil when that is the
    /// value itself. A non-finite double becomes null when `nullForNonFinite`, else it is an error.
    fileprivate static func roundTripped(
        _ value: JSONValue, nullForNonFinite: Bool
    ) throws(NonFiniteNumber) -> JSONValue? {
        switch value {
        case .null, .bool, .int, .string:
            return nil
        case .double(let number):
            guard number.isFinite else {
                if nullForNonFinite { return .null }
                throw NonFiniteNumber(number: number, reversedPath: [])
            }
            let read = JSONNumberRules.value(number)
            if case .int = read { return read }
            return nil
        case .array(let elements):
            var changed: [JSONValue]?
            for (index, element) in elements.enumerated() {
                do {
                    guard let new = try roundTripped(element, nullForNonFinite: nullForNonFinite) else { continue }
                    if changed == nil { changed = elements }
                    changed![index] = new
                } catch {
                    throw error.inside(JSONValueCodingKey(index: index))
                }
            }
            return changed.map(JSONValue.array)
        case .object(let members):
            var changed: [String: JSONValue]?
            for (key, member) in members {
                do {
                    guard let new = try roundTripped(member, nullForNonFinite: nullForNonFinite) else { continue }
                    if changed == nil { changed = members }
                    changed![key] = new
                } catch {
                    throw error.inside(JSONValueCodingKey(stringValue: key))
                }
            }
            return changed.map(JSONValue.object)
        }
    }
}

/// A non-finite double met while encoding a `JSONValue`, with the keys from it up to the value encoded.
private struct NonFiniteNumber: Error {
    var number: Double
    var reversedPath: [any CodingKey]

    func inside(_ key: any CodingKey) -> NonFiniteNumber {
        NonFiniteNumber(number: number, reversedPath: reversedPath + [key])
    }

    func encodingError(at path: JSONCodingPath) -> EncodingError {
        EncodingError.invalidValue(
            number,
            EncodingError.Context(
                codingPath: path.keys + reversedPath.reversed(),
                debugDescription: "Unable to encode Double.\(number) directly in JSON."))
    }
}

/// The collection types the coders read and write directly, their metadata looked up once.
private enum CodedTypes {
    static let jsonObject: Any.Type = [String: JSONValue].self
    static let jsonArray: Any.Type = [JSONValue].self
    static let stringMap: Any.Type = [String: String].self
    static let strings: Any.Type = [String].self
}

// MARK: Coding paths

/// A coding key of the JSON value coders: an object member's name, or an array element's index (named as
/// Foundation's coders name it, `Index 3`).
struct JSONValueCodingKey: CodingKey {
    private let name: String?
    let intValue: Int?

    init(stringValue: String) {
        name = stringValue
        intValue = nil
    }

    init(intValue: Int) {
        name = String(intValue)
        self.intValue = intValue
    }

    init(index: Int) {
        name = nil
        intValue = index
    }

    var stringValue: String { name ?? "Index \(intValue ?? 0)" }

    /// The key of `superDecoder()` and `superEncoder()`.
    static let `super` = JSONValueCodingKey(stringValue: "super")
}

/// A coding path as a chain from a value up to the root: appending a key costs one small allocation, and the array of
/// keys is built only when asked for (an error, a type that reads its own `codingPath`).
indirect enum JSONCodingPath {
    case root
    case member(any CodingKey, of: JSONCodingPath)

    func appending(_ key: any CodingKey) -> JSONCodingPath { .member(key, of: self) }

    func appending(index: Int) -> JSONCodingPath { .member(JSONValueCodingKey(index: index), of: self) }

    var keys: [any CodingKey] {
        var keys: [any CodingKey] = []
        var node = self
        while case .member(let key, let parent) = node {
            keys.append(key)
            node = parent
        }
        return keys.reversed()
    }
}

// MARK: Decoding

/// A `Decoder` over a `JSONValue`: what `JSONValue.decode(_:)` uses.
final class JSONValueDecoder: Decoder, SingleValueDecodingContainer {
    let value: JSONValue
    let path: JSONCodingPath

    init(_ value: JSONValue, path: JSONCodingPath) {
        self.value = value
        self.path = path
    }

    /// A `T` read from `value`, as JSONDecoder reads it from the value's JSON text.
    static func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws -> T {
        try unwrap(value, as: type, at: .root)
    }

    var codingPath: [any CodingKey] { path.keys }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let members) = value else {
            if value.readsAsNull {
                throw DecodingError.valueNotFound(
                    [String: Any].self,
                    DecodingError.Context(
                        codingPath: codingPath,
                        debugDescription: "Cannot get keyed decoding container -- found null value instead"))
            }
            throw Self.mismatch([String: Any].self, value, at: path)
        }
        return KeyedDecodingContainer(KeyedContainer<Key>(members: members, path: path))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let elements) = value else {
            if value.readsAsNull {
                throw DecodingError.valueNotFound(
                    [Any].self,
                    DecodingError.Context(
                        codingPath: codingPath,
                        debugDescription: "Cannot get unkeyed decoding container -- found null value instead"))
            }
            throw Self.mismatch([Any].self, value, at: path)
        }
        return UnkeyedContainer(elements: elements, path: path)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { self }

    func decodeNil() -> Bool { value.readsAsNull }
    func decode(_ type: Bool.Type) throws -> Bool { try Self.bool(value, at: path) }
    func decode(_ type: String.Type) throws -> String { try Self.string(value, at: path) }
    func decode(_ type: Double.Type) throws -> Double { try Self.double(value, at: path) }
    func decode(_ type: Float.Type) throws -> Float { try Self.float(value, at: path) }
    func decode(_ type: Int.Type) throws -> Int { try Self.integer(value, at: path) }
    func decode(_ type: Int8.Type) throws -> Int8 { try Self.integer(value, at: path) }
    func decode(_ type: Int16.Type) throws -> Int16 { try Self.integer(value, at: path) }
    func decode(_ type: Int32.Type) throws -> Int32 { try Self.integer(value, at: path) }
    func decode(_ type: Int64.Type) throws -> Int64 { try Self.integer(value, at: path) }
    func decode(_ type: Int128.Type) throws -> Int128 { try Self.integer(value, at: path) }
    func decode(_ type: UInt.Type) throws -> UInt { try Self.integer(value, at: path) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try Self.integer(value, at: path) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try Self.integer(value, at: path) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try Self.integer(value, at: path) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try Self.integer(value, at: path) }
    func decode(_ type: UInt128.Type) throws -> UInt128 { try Self.integer(value, at: path) }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try Self.unwrap(value, as: type, at: path) }

    /// A `T` read from `value` at `path`: scalars, JSON values and Foundation's special types directly (as
    /// JSONDecoder treats them), anything else by its `init(from:)`.
    static func unwrap<T: Decodable>(
        _ value: JSONValue, as type: T.Type, at path: @autoclosure () -> JSONCodingPath
    ) throws -> T {
        if T.self == String.self { return try string(value, at: path()) as! T }
        if T.self == JSONValue.self {
            return ((try? JSONValue.roundTripped(value, nullForNonFinite: true)) ?? value) as! T
        }
        if T.self == Int64.self { return try integer(value, at: path()) as Int64 as! T }
        if T.self == Bool.self { return try bool(value, at: path()) as! T }
        if T.self == Int.self { return try integer(value, at: path()) as Int as! T }
        if T.self == Double.self { return try double(value, at: path()) as! T }
        if T.self == CodedTypes.jsonObject, case .object(let members) = value {
            return ((try? JSONValue.roundTripped(value, nullForNonFinite: true))?.object ?? members) as! T
        }
        if T.self == CodedTypes.jsonArray, case .array(let elements) = value {
            return ((try? JSONValue.roundTripped(value, nullForNonFinite: true))?.array ?? elements) as! T
        }
        if T.self == CodedTypes.stringMap, case .object(let members) = value {
            var strings: [String: String] = [:]
            strings.reserveCapacity(members.count)
            for (key, member) in members {
                guard case .string(let text) = member else { return try T(from: JSONValueDecoder(value, path: path())) }
                strings[key] = text
            }
            return strings as! T
        }
        if T.self == CodedTypes.strings, case .array(let elements) = value {
            var strings: [String] = []
            strings.reserveCapacity(elements.count)
            for element in elements {
                guard case .string(let text) = element else {
                    return try T(from: JSONValueDecoder(value, path: path()))
                }
                strings.append(text)
            }
            return strings as! T
        }
        if T.self == Date.self {
            try expectNotNull(value, Date.self, at: path())
            return Date(timeIntervalSinceReferenceDate: try double(value, at: path())) as! T
        }
        if T.self == Data.self {
            try expectNotNull(value, Data.self, at: path())
            guard let data = Data(base64Encoded: try string(value, at: path())) else {
                throw corrupted("Encountered Data is not valid Base64.", at: path())
            }
            return data as! T
        }
        if T.self == URL.self {
            try expectNotNull(value, URL.self, at: path())
            guard let url = URL(string: try string(value, at: path())) else {
                throw corrupted("Invalid URL string.", at: path())
            }
            return url as! T
        }
        if T.self == Decimal.self {
            try expectNotNull(value, Decimal.self, at: path())
            guard let text = JSONNumberRules.text(of: value) else { throw mismatch(Decimal.self, value, at: path()) }
            guard let decimal = Decimal(string: text) else { throw unrepresentable(text, Decimal.self, at: path()) }
            return decimal as! T
        }
        return try T(from: JSONValueDecoder(value, path: path()))
    }

    static func bool(_ value: JSONValue, at path: @autoclosure () -> JSONCodingPath) throws -> Bool {
        guard case .bool(let flag) = value else { throw mismatch(Bool.self, value, at: path()) }
        return flag
    }

    static func string(_ value: JSONValue, at path: @autoclosure () -> JSONCodingPath) throws -> String {
        guard case .string(let text) = value else {
            try expectNotNull(value, String.self, at: path())
            throw mismatch(String.self, value, at: path())
        }
        return text
    }

    static func integer<T: FixedWidthInteger>(
        _ value: JSONValue, at path: @autoclosure () -> JSONCodingPath
    ) throws -> T {
        switch value {
        case .int(let number):
            if let integer = T(exactly: number) { return integer }
        case .double(let number) where number.isFinite:
            if let integer: T = JSONNumberRules.integer(number) { return integer }
        default:
            try expectNotNull(value, T.self, at: path())
            throw mismatch(T.self, value, at: path())
        }
        throw unrepresentable(JSONNumberRules.text(of: value) ?? "", T.self, at: path())
    }

    static func double(_ value: JSONValue, at path: @autoclosure () -> JSONCodingPath) throws -> Double {
        switch value {
        case .int(let number): return Double(number)
        case .double(let number) where number.isFinite: return number
        default:
            try expectNotNull(value, Double.self, at: path())
            throw mismatch(Double.self, value, at: path())
        }
    }

    static func float(_ value: JSONValue, at path: @autoclosure () -> JSONCodingPath) throws -> Float {
        guard let text = JSONNumberRules.text(of: value) else {
            try expectNotNull(value, Float.self, at: path())
            throw mismatch(Float.self, value, at: path())
        }
        guard let number = JSONNumberRules.float(text: text) else {
            throw unrepresentable(text, Float.self, at: path())
        }
        return number
    }

    private static func expectNotNull(_ value: JSONValue, _ type: Any.Type, at path: JSONCodingPath) throws {
        guard value.readsAsNull else { return }
        throw DecodingError.valueNotFound(
            type,
            DecodingError.Context(
                codingPath: path.keys, debugDescription: "Cannot get value of type \(type) -- found null value instead")
        )
    }

    fileprivate static func mismatch(_ type: Any.Type, _ value: JSONValue, at path: JSONCodingPath) -> DecodingError {
        DecodingError.typeMismatch(
            type,
            DecodingError.Context(
                codingPath: path.keys,
                debugDescription: "Expected to decode \(type) but found \(value.kindDescription) instead."))
    }

    private static func unrepresentable(_ text: String, _ type: Any.Type, at path: JSONCodingPath) -> DecodingError {
        corrupted("Number \(text) is not representable in \(type).", at: path)
    }

    private static func corrupted(_ message: String, at path: JSONCodingPath) -> DecodingError {
        DecodingError.dataCorrupted(DecodingError.Context(codingPath: path.keys, debugDescription: message))
    }

    /// The members of an object, by key.
    private struct KeyedContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let members: [String: JSONValue]
        let path: JSONCodingPath

        var codingPath: [any CodingKey] { path.keys }
        var allKeys: [Key] { members.keys.compactMap { Key(stringValue: $0) } }

        func contains(_ key: Key) -> Bool { members[key.stringValue] != nil }

        private func member(_ key: Key) throws -> JSONValue {
            guard let member = members[key.stringValue] else {
                throw DecodingError.keyNotFound(
                    key,
                    DecodingError.Context(
                        codingPath: codingPath,
                        debugDescription: "No value associated with key \(key) (\"\(key.stringValue)\")."))
            }
            return member
        }

        /// The member, nil when it is missing or null.
        private func present(_ key: Key) -> JSONValue? {
            guard let member = members[key.stringValue], !member.readsAsNull else { return nil }
            return member
        }

        private func integer<T: FixedWidthInteger>(_ key: Key) throws -> T {
            try JSONValueDecoder.integer(member(key), at: path.appending(key))
        }

        private func integerIfPresent<T: FixedWidthInteger>(_ key: Key) throws -> T? {
            guard let member = present(key) else { return nil }
            return try JSONValueDecoder.integer(member, at: path.appending(key)) as T
        }

        func decodeNil(forKey key: Key) throws -> Bool { try member(key).readsAsNull }

        func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool {
            try JSONValueDecoder.bool(member(key), at: path.appending(key))
        }

        func decode(_ type: String.Type, forKey key: Key) throws -> String {
            try JSONValueDecoder.string(member(key), at: path.appending(key))
        }

        func decode(_ type: Double.Type, forKey key: Key) throws -> Double {
            try JSONValueDecoder.double(member(key), at: path.appending(key))
        }

        func decode(_ type: Float.Type, forKey key: Key) throws -> Float {
            try JSONValueDecoder.float(member(key), at: path.appending(key))
        }

        func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try integer(key) }
        func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try integer(key) }
        func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try integer(key) }
        func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try integer(key) }
        func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try integer(key) }
        func decode(_ type: Int128.Type, forKey key: Key) throws -> Int128 { try integer(key) }
        func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try integer(key) }
        func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try integer(key) }
        func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try integer(key) }
        func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try integer(key) }
        func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try integer(key) }
        func decode(_ type: UInt128.Type, forKey key: Key) throws -> UInt128 { try integer(key) }

        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
            try JSONValueDecoder.unwrap(member(key), as: type, at: path.appending(key))
        }

        func decodeIfPresent(_ type: Bool.Type, forKey key: Key) throws -> Bool? {
            guard let member = present(key) else { return nil }
            return try JSONValueDecoder.bool(member, at: path.appending(key))
        }

        func decodeIfPresent(_ type: String.Type, forKey key: Key) throws -> String? {
            guard let member = present(key) else { return nil }
            return try JSONValueDecoder.string(member, at: path.appending(key))
        }

        func decodeIfPresent(_ type: Double.Type, forKey key: Key) throws -> Double? {
            guard let member = present(key) else { return nil }
            return try JSONValueDecoder.double(member, at: path.appending(key))
        }

        func decodeIfPresent(_ type: Float.Type, forKey key: Key) throws -> Float? {
            guard let member = present(key) else { return nil }
            return try JSONValueDecoder.float(member, at: path.appending(key))
        }

        func decodeIfPresent(_ type: Int.Type, forKey key: Key) throws -> Int? { try integerIfPresent(key) }
        func decodeIfPresent(_ type: Int8.Type, forKey key: Key) throws -> Int8? { try integerIfPresent(key) }
        func decodeIfPresent(_ type: Int16.Type, forKey key: Key) throws -> Int16? { try integerIfPresent(key) }
        func decodeIfPresent(_ type: Int32.Type, forKey key: Key) throws -> Int32? { try integerIfPresent(key) }
        func decodeIfPresent(_ type: Int64.Type, forKey key: Key) throws -> Int64? { try integerIfPresent(key) }
        func decodeIfPresent(_ type: Int128.Type, forKey key: Key) throws -> Int128? { try integerIfPresent(key) }
        func decodeIfPresent(_ type: UInt.Type, forKey key: Key) throws -> UInt? { try integerIfPresent(key) }
        func decodeIfPresent(_ type: UInt8.Type, forKey key: Key) throws -> UInt8? { try integerIfPresent(key) }
        func decodeIfPresent(_ type: UInt16.Type, forKey key: Key) throws -> UInt16? { try integerIfPresent(key) }
        func decodeIfPresent(_ type: UInt32.Type, forKey key: Key) throws -> UInt32? { try integerIfPresent(key) }
        func decodeIfPresent(_ type: UInt64.Type, forKey key: Key) throws -> UInt64? { try integerIfPresent(key) }
        func decodeIfPresent(_ type: UInt128.Type, forKey key: Key) throws -> UInt128? { try integerIfPresent(key) }

        func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
            guard let member = present(key) else { return nil }
            return try JSONValueDecoder.unwrap(member, as: type, at: path.appending(key))
        }

        func nestedContainer<NestedKey: CodingKey>(
            keyedBy type: NestedKey.Type, forKey key: Key
        ) throws -> KeyedDecodingContainer<NestedKey> {
            try JSONValueDecoder(member(key), path: path.appending(key)).container(keyedBy: type)
        }

        func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
            try JSONValueDecoder(member(key), path: path.appending(key)).unkeyedContainer()
        }

        func superDecoder() throws -> any Decoder {
            JSONValueDecoder(
                members[JSONValueCodingKey.super.stringValue] ?? .null, path: path.appending(JSONValueCodingKey.super))
        }

        func superDecoder(forKey key: Key) throws -> any Decoder {
            JSONValueDecoder(members[key.stringValue] ?? .null, path: path.appending(key))
        }
    }

    /// The elements of an array, in order.
    private struct UnkeyedContainer: UnkeyedDecodingContainer {
        let elements: [JSONValue]
        let path: JSONCodingPath
        private(set) var currentIndex = 0

        init(elements: [JSONValue], path: JSONCodingPath) {
            self.elements = elements
            self.path = path
        }

        var codingPath: [any CodingKey] { path.keys }
        var count: Int? { elements.count }
        var isAtEnd: Bool { currentIndex >= elements.count }

        private var elementPath: JSONCodingPath { path.appending(index: currentIndex) }

        private func next(_ type: Any.Type, atEnd message: String = "Unkeyed container is at end.") throws -> JSONValue
        {
            guard currentIndex < elements.count else {
                throw DecodingError.valueNotFound(
                    type, DecodingError.Context(codingPath: elementPath.keys, debugDescription: message))
            }
            return elements[currentIndex]
        }

        /// Reads the next element with `read`, and moves past it when that succeeds.
        private mutating func read<T>(
            _ type: T.Type, _ read: (JSONValue, @autoclosure () -> JSONCodingPath) throws -> T
        ) throws -> T {
            let result = try read(next(type), elementPath)
            currentIndex += 1
            return result
        }

        /// Reads the next element with `read` unless it is null or there is none (nil), and moves past it.
        private mutating func readIfPresent<T>(
            _ read: (JSONValue, @autoclosure () -> JSONCodingPath) throws -> T
        ) throws -> T? {
            guard currentIndex < elements.count, !elements[currentIndex].readsAsNull else {
                currentIndex += 1
                return nil
            }
            let result = try read(elements[currentIndex], elementPath)
            currentIndex += 1
            return result
        }

        private mutating func integer<T: FixedWidthInteger>() throws -> T {
            try read(T.self) { try JSONValueDecoder.integer($0, at: $1()) }
        }

        private mutating func integerIfPresent<T: FixedWidthInteger>() throws -> T? {
            try readIfPresent { try JSONValueDecoder.integer($0, at: $1()) as T }
        }

        mutating func decodeNil() throws -> Bool {
            guard try next(Never.self).readsAsNull else { return false }
            currentIndex += 1
            return true
        }

        mutating func decode(_ type: Bool.Type) throws -> Bool {
            try read(type) { try JSONValueDecoder.bool($0, at: $1()) }
        }

        mutating func decode(_ type: String.Type) throws -> String {
            try read(type) { try JSONValueDecoder.string($0, at: $1()) }
        }

        mutating func decode(_ type: Double.Type) throws -> Double {
            try read(type) { try JSONValueDecoder.double($0, at: $1()) }
        }

        mutating func decode(_ type: Float.Type) throws -> Float {
            try read(type) { try JSONValueDecoder.float($0, at: $1()) }
        }

        mutating func decode(_ type: Int.Type) throws -> Int { try integer() }
        mutating func decode(_ type: Int8.Type) throws -> Int8 { try integer() }
        mutating func decode(_ type: Int16.Type) throws -> Int16 { try integer() }
        mutating func decode(_ type: Int32.Type) throws -> Int32 { try integer() }
        mutating func decode(_ type: Int64.Type) throws -> Int64 { try integer() }
        mutating func decode(_ type: Int128.Type) throws -> Int128 { try integer() }
        mutating func decode(_ type: UInt.Type) throws -> UInt { try integer() }
        mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try integer() }
        mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try integer() }
        mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try integer() }
        mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try integer() }
        mutating func decode(_ type: UInt128.Type) throws -> UInt128 { try integer() }

        mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
            try read(type) { try JSONValueDecoder.unwrap($0, as: type, at: $1()) }
        }

        mutating func decodeIfPresent(_ type: Bool.Type) throws -> Bool? {
            try readIfPresent { try JSONValueDecoder.bool($0, at: $1()) }
        }

        mutating func decodeIfPresent(_ type: String.Type) throws -> String? {
            try readIfPresent { try JSONValueDecoder.string($0, at: $1()) }
        }

        mutating func decodeIfPresent(_ type: Double.Type) throws -> Double? {
            try readIfPresent { try JSONValueDecoder.double($0, at: $1()) }
        }

        mutating func decodeIfPresent(_ type: Float.Type) throws -> Float? {
            try readIfPresent { try JSONValueDecoder.float($0, at: $1()) }
        }

        mutating func decodeIfPresent(_ type: Int.Type) throws -> Int? { try integerIfPresent() }
        mutating func decodeIfPresent(_ type: Int8.Type) throws -> Int8? { try integerIfPresent() }
        mutating func decodeIfPresent(_ type: Int16.Type) throws -> Int16? { try integerIfPresent() }
        mutating func decodeIfPresent(_ type: Int32.Type) throws -> Int32? { try integerIfPresent() }
        mutating func decodeIfPresent(_ type: Int64.Type) throws -> Int64? { try integerIfPresent() }
        mutating func decodeIfPresent(_ type: Int128.Type) throws -> Int128? { try integerIfPresent() }
        mutating func decodeIfPresent(_ type: UInt.Type) throws -> UInt? { try integerIfPresent() }
        mutating func decodeIfPresent(_ type: UInt8.Type) throws -> UInt8? { try integerIfPresent() }
        mutating func decodeIfPresent(_ type: UInt16.Type) throws -> UInt16? { try integerIfPresent() }
        mutating func decodeIfPresent(_ type: UInt32.Type) throws -> UInt32? { try integerIfPresent() }
        mutating func decodeIfPresent(_ type: UInt64.Type) throws -> UInt64? { try integerIfPresent() }
        mutating func decodeIfPresent(_ type: UInt128.Type) throws -> UInt128? { try integerIfPresent() }

        mutating func decodeIfPresent<T: Decodable>(_ type: T.Type) throws -> T? {
            try readIfPresent { try JSONValueDecoder.unwrap($0, as: type, at: $1()) }
        }

        mutating func nestedContainer<NestedKey: CodingKey>(
            keyedBy type: NestedKey.Type
        ) throws -> KeyedDecodingContainer<NestedKey> {
            try read(KeyedDecodingContainer<NestedKey>.self) {
                try JSONValueDecoder($0, path: $1()).container(keyedBy: type)
            }
        }

        mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
            try read((any UnkeyedDecodingContainer).self) { try JSONValueDecoder($0, path: $1()).unkeyedContainer() }
        }

        mutating func superDecoder() throws -> any Decoder {
            let element = try next(
                (any Decoder).self, atEnd: "Cannot get superDecoder() -- unkeyed container is at end.")
            defer { currentIndex += 1 }
            return JSONValueDecoder(element, path: elementPath)
        }
    }
}

// MARK: Encoding

/// An `Encoder` that builds a `JSONValue`: what `JSONValue(encoding:)` uses.
final class JSONValueEncoder: Encoder, SingleValueEncodingContainer {
    let path: JSONCodingPath
    private var single: JSONValue?
    private var object: ObjectStorage?
    private var array: ArrayStorage?
    /// Where a `superEncoder()`'s value goes once the encoder is done with (released).
    private let writeBack: ((JSONValue) -> Void)?

    init(path: JSONCodingPath, writeBack: ((JSONValue) -> Void)? = nil) {
        self.path = path
        self.writeBack = writeBack
    }

    deinit {
        writeBack?(value ?? .object([:]))
    }

    /// The `JSONValue` of `value`, as JSONEncoder writes it and `JSONValue(from:)` reads it back.
    static func encode<T: Encodable>(_ value: T) throws -> JSONValue {
        guard let encoded = try wrapIfEncoded(value, at: .root) else {
            throw EncodingError.invalidValue(
                value,
                EncodingError.Context(
                    codingPath: [], debugDescription: "Top-level \(T.self) did not encode any values."))
        }
        return encoded
    }

    /// What was encoded, nil when nothing was.
    private var value: JSONValue? {
        if let object { return object.value }
        if let array { return array.value }
        return single
    }

    var codingPath: [any CodingKey] { path.keys }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        if let object { return KeyedEncodingContainer(KeyedContainer<Key>(storage: object, path: path, owner: self)) }
        let storage: ObjectStorage
        if case .object(let members)? = single {
            storage = ObjectStorage(members)
            single = nil
        } else {
            precondition(
                single == nil && array == nil,
                "Attempt to push new keyed encoding container when already previously encoded at this path.")
            storage = ObjectStorage([:])
        }
        object = storage
        return KeyedEncodingContainer(KeyedContainer<Key>(storage: storage, path: path, owner: self))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        if let array { return UnkeyedContainer(storage: array, path: path, owner: self) }
        let storage: ArrayStorage
        if case .array(let elements)? = single {
            storage = ArrayStorage(elements)
            single = nil
        } else {
            precondition(
                single == nil && object == nil,
                "Attempt to push new unkeyed encoding container when already previously encoded at this path.")
            storage = ArrayStorage([])
        }
        array = storage
        return UnkeyedContainer(storage: storage, path: path, owner: self)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer { self }

    private func set(_ value: JSONValue) {
        precondition(
            single == nil,
            "Attempt to encode value through single value container when previously value already encoded.")
        single = value
    }

    func encodeNil() throws { set(.null) }
    func encode(_ value: Bool) throws { set(.bool(value)) }
    func encode(_ value: String) throws { set(.string(value)) }
    func encode(_ value: Double) throws { set(try Self.number(value, at: path)) }
    func encode(_ value: Float) throws { set(try Self.number(value, at: path)) }
    func encode(_ value: Int) throws { set(.int(Int64(value))) }
    func encode(_ value: Int8) throws { set(.int(Int64(value))) }
    func encode(_ value: Int16) throws { set(.int(Int64(value))) }
    func encode(_ value: Int32) throws { set(.int(Int64(value))) }
    func encode(_ value: Int64) throws { set(.int(value)) }
    func encode(_ value: Int128) throws { set(JSONNumberRules.value(integer: value)) }
    func encode(_ value: UInt) throws { set(JSONNumberRules.value(integer: value)) }
    func encode(_ value: UInt8) throws { set(.int(Int64(value))) }
    func encode(_ value: UInt16) throws { set(.int(Int64(value))) }
    func encode(_ value: UInt32) throws { set(.int(Int64(value))) }
    func encode(_ value: UInt64) throws { set(JSONNumberRules.value(integer: value)) }
    func encode(_ value: UInt128) throws { set(JSONNumberRules.value(integer: value)) }
    func encode<T: Encodable>(_ value: T) throws { set(try Self.wrap(value, at: path)) }

    /// The value of a nested `value` at `path`; one that encodes nothing is an empty object, as JSONEncoder has it.
    static func wrap<T: Encodable>(_ value: T, at path: @autoclosure () -> JSONCodingPath) throws -> JSONValue {
        try wrapIfEncoded(value, at: path()) ?? .object([:])
    }

    /// The value of `value` at `path` (nil when it encodes nothing): scalars, JSON values and Foundation's special
    /// types directly (as JSONEncoder treats them), anything else by its `encode(to:)`.
    private static func wrapIfEncoded<T: Encodable>(
        _ value: T, at path: @autoclosure () -> JSONCodingPath
    ) throws -> JSONValue? {
        if T.self == String.self { return .string(value as! String) }
        if T.self == JSONValue.self {
            let json = value as! JSONValue
            do {
                return try JSONValue.roundTripped(json, nullForNonFinite: false) ?? json
            } catch {
                throw error.encodingError(at: path())
            }
        }
        if T.self == Int64.self { return .int(value as! Int64) }
        if T.self == Bool.self { return .bool(value as! Bool) }
        if T.self == Int.self { return .int(Int64(value as! Int)) }
        if T.self == Double.self { return try number(value as! Double, at: path()) }
        if T.self == CodedTypes.jsonObject || T.self == CodedTypes.jsonArray {
            let json: JSONValue =
                T.self == CodedTypes.jsonObject ? .object(value as! [String: JSONValue]) : .array(value as! [JSONValue])
            do {
                return try JSONValue.roundTripped(json, nullForNonFinite: false) ?? json
            } catch {
                throw error.encodingError(at: path())
            }
        }
        if T.self == CodedTypes.stringMap { return .object((value as! [String: String]).mapValues(JSONValue.string)) }
        if T.self == CodedTypes.strings { return .array((value as! [String]).map(JSONValue.string)) }
        if T.self == Date.self { return try number((value as! Date).timeIntervalSinceReferenceDate, at: path()) }
        if T.self == Data.self { return .string((value as! Data).base64EncodedString()) }
        if T.self == URL.self { return .string((value as! URL).absoluteString) }
        if T.self == Decimal.self {
            let decimal = value as! Decimal
            guard let number = JSONNumberRules.value(text: decimal.description) else {
                throw EncodingError.invalidValue(
                    decimal,
                    EncodingError.Context(
                        codingPath: path().keys,
                        debugDescription: "Unable to encode Decimal.\(decimal) directly in JSON."))
            }
            return number
        }
        let encoder = JSONValueEncoder(path: path())
        try value.encode(to: encoder)
        return encoder.value
    }

    /// The value of a floating-point number as it reads back; JSON holds no infinity or NaN.
    static func number<F: BinaryFloatingPoint & CustomStringConvertible>(
        _ number: F, at path: @autoclosure () -> JSONCodingPath
    ) throws -> JSONValue {
        guard number.isFinite else {
            throw EncodingError.invalidValue(
                number,
                EncodingError.Context(
                    codingPath: path().keys, debugDescription: "Unable to encode \(F.self).\(number) directly in JSON.")
            )
        }
        if F.self == Double.self { return JSONNumberRules.value(number as! Double) }
        return JSONNumberRules.value(text: JSONNumberRules.text(number)) ?? .null
    }

    /// An object being encoded: its members, and the containers handed out for some of them (read when it is done).
    private final class ObjectStorage {
        var members: [String: JSONValue]
        var nested: [String: NestedStorage] = [:]

        init(_ members: [String: JSONValue]) {
            self.members = members
        }

        func set(_ value: JSONValue, for key: String) {
            members[key] = value
            if !nested.isEmpty { nested[key] = nil }
        }

        var value: JSONValue {
            guard !nested.isEmpty else { return .object(members) }
            var result = members
            for (key, storage) in nested { result[key] = storage.value }
            return .object(result)
        }

        func object(for key: String) -> ObjectStorage {
            if let existing = nested[key] {
                guard case .object(let storage) = existing else {
                    preconditionFailure("For key \"\(key)\" an unkeyed container has already been created.")
                }
                return storage
            }
            let storage: ObjectStorage
            switch members.removeValue(forKey: key) {
            case .object(let members)?: storage = ObjectStorage(members)
            case nil: storage = ObjectStorage([:])
            case let other?:
                members[key] = other
                preconditionFailure("Attempt to re-encode into nested keyed container for key \"\(key)\".")
            }
            nested[key] = .object(storage)
            return storage
        }

        func array(for key: String) -> ArrayStorage {
            if let existing = nested[key] {
                guard case .array(let storage) = existing else {
                    preconditionFailure("For key \"\(key)\" a keyed container has already been created.")
                }
                return storage
            }
            let storage: ArrayStorage
            switch members.removeValue(forKey: key) {
            case .array(let elements)?: storage = ArrayStorage(elements)
            case nil: storage = ArrayStorage([])
            case let other?:
                members[key] = other
                preconditionFailure("Attempt to re-encode into nested unkeyed container for key \"\(key)\".")
            }
            nested[key] = .array(storage)
            return storage
        }
    }

    /// An array being encoded: its elements, and the containers handed out for some of them by position.
    private final class ArrayStorage {
        var elements: [JSONValue]
        var nested: [Int: NestedStorage] = [:]

        init(_ elements: [JSONValue]) {
            self.elements = elements
        }

        func append(_ storage: NestedStorage) {
            nested[elements.count] = storage
            elements.append(.null)
        }

        func insert(_ value: JSONValue, at index: Int) {
            elements.insert(value, at: index)
            guard !nested.isEmpty else { return }
            nested = Dictionary(uniqueKeysWithValues: nested.map { ($0.key >= index ? $0.key + 1 : $0.key, $0.value) })
        }

        var value: JSONValue {
            guard !nested.isEmpty else { return .array(elements) }
            var result = elements
            for (index, storage) in nested { result[index] = storage.value }
            return .array(result)
        }
    }

    private enum NestedStorage {
        case object(ObjectStorage)
        case array(ArrayStorage)

        var value: JSONValue {
            switch self {
            case .object(let storage): storage.value
            case .array(let storage): storage.value
            }
        }
    }

    /// The members of an object being encoded. A container keeps its encoder alive: a `superEncoder()`'s encoder
    /// writes its value back when released, so not before its containers are done.
    private struct KeyedContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let storage: ObjectStorage
        let path: JSONCodingPath
        let owner: JSONValueEncoder

        var codingPath: [any CodingKey] { path.keys }

        mutating func encodeNil(forKey key: Key) throws { storage.set(.null, for: key.stringValue) }
        mutating func encode(_ value: Bool, forKey key: Key) throws { storage.set(.bool(value), for: key.stringValue) }

        mutating func encode(_ value: String, forKey key: Key) throws {
            storage.set(.string(value), for: key.stringValue)
        }

        mutating func encode(_ value: Double, forKey key: Key) throws {
            storage.set(try JSONValueEncoder.number(value, at: path.appending(key)), for: key.stringValue)
        }

        mutating func encode(_ value: Float, forKey key: Key) throws {
            storage.set(try JSONValueEncoder.number(value, at: path.appending(key)), for: key.stringValue)
        }

        mutating func encode(_ value: Int, forKey key: Key) throws { integer(value, key) }
        mutating func encode(_ value: Int8, forKey key: Key) throws { integer(value, key) }
        mutating func encode(_ value: Int16, forKey key: Key) throws { integer(value, key) }
        mutating func encode(_ value: Int32, forKey key: Key) throws { integer(value, key) }
        mutating func encode(_ value: Int64, forKey key: Key) throws { integer(value, key) }
        mutating func encode(_ value: Int128, forKey key: Key) throws { integer(value, key) }
        mutating func encode(_ value: UInt, forKey key: Key) throws { integer(value, key) }
        mutating func encode(_ value: UInt8, forKey key: Key) throws { integer(value, key) }
        mutating func encode(_ value: UInt16, forKey key: Key) throws { integer(value, key) }
        mutating func encode(_ value: UInt32, forKey key: Key) throws { integer(value, key) }
        mutating func encode(_ value: UInt64, forKey key: Key) throws { integer(value, key) }
        mutating func encode(_ value: UInt128, forKey key: Key) throws { integer(value, key) }

        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            storage.set(try JSONValueEncoder.wrap(value, at: path.appending(key)), for: key.stringValue)
        }

        private func integer<T: FixedWidthInteger>(_ value: T, _ key: Key) {
            storage.set(JSONNumberRules.value(integer: value), for: key.stringValue)
        }

        mutating func nestedContainer<NestedKey: CodingKey>(
            keyedBy keyType: NestedKey.Type, forKey key: Key
        ) -> KeyedEncodingContainer<NestedKey> {
            KeyedEncodingContainer(
                KeyedContainer<NestedKey>(
                    storage: storage.object(for: key.stringValue), path: path.appending(key), owner: owner))
        }

        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            UnkeyedContainer(storage: storage.array(for: key.stringValue), path: path.appending(key), owner: owner)
        }

        mutating func superEncoder() -> any Encoder { superEncoder(JSONValueCodingKey.super) }
        mutating func superEncoder(forKey key: Key) -> any Encoder { superEncoder(key) }

        private func superEncoder(_ key: any CodingKey) -> any Encoder {
            let storage = storage
            let name = key.stringValue
            return JSONValueEncoder(path: path.appending(key)) { storage.set($0, for: name) }
        }
    }

    /// The elements of an array being encoded; like `KeyedContainer`, it keeps its encoder alive.
    private struct UnkeyedContainer: UnkeyedEncodingContainer {
        let storage: ArrayStorage
        let path: JSONCodingPath
        let owner: JSONValueEncoder

        var codingPath: [any CodingKey] { path.keys }
        var count: Int { storage.elements.count }

        private var elementPath: JSONCodingPath { path.appending(index: count) }

        mutating func encodeNil() throws { storage.elements.append(.null) }
        mutating func encode(_ value: Bool) throws { storage.elements.append(.bool(value)) }
        mutating func encode(_ value: String) throws { storage.elements.append(.string(value)) }

        mutating func encode(_ value: Double) throws {
            storage.elements.append(try JSONValueEncoder.number(value, at: elementPath))
        }

        mutating func encode(_ value: Float) throws {
            storage.elements.append(try JSONValueEncoder.number(value, at: elementPath))
        }

        mutating func encode(_ value: Int) throws { integer(value) }
        mutating func encode(_ value: Int8) throws { integer(value) }
        mutating func encode(_ value: Int16) throws { integer(value) }
        mutating func encode(_ value: Int32) throws { integer(value) }
        mutating func encode(_ value: Int64) throws { integer(value) }
        mutating func encode(_ value: Int128) throws { integer(value) }
        mutating func encode(_ value: UInt) throws { integer(value) }
        mutating func encode(_ value: UInt8) throws { integer(value) }
        mutating func encode(_ value: UInt16) throws { integer(value) }
        mutating func encode(_ value: UInt32) throws { integer(value) }
        mutating func encode(_ value: UInt64) throws { integer(value) }
        mutating func encode(_ value: UInt128) throws { integer(value) }

        mutating func encode<T: Encodable>(_ value: T) throws {
            storage.elements.append(try JSONValueEncoder.wrap(value, at: elementPath))
        }

        private func integer<T: FixedWidthInteger>(_ value: T) {
            storage.elements.append(JSONNumberRules.value(integer: value))
        }

        mutating func nestedContainer<NestedKey: CodingKey>(
            keyedBy keyType: NestedKey.Type
        ) -> KeyedEncodingContainer<NestedKey> {
            let nested = ObjectStorage([:])
            let path = elementPath
            storage.append(.object(nested))
            return KeyedEncodingContainer(KeyedContainer<NestedKey>(storage: nested, path: path, owner: owner))
        }

        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            let nested = ArrayStorage([])
            let path = elementPath
            storage.append(.array(nested))
            return UnkeyedContainer(storage: nested, path: path, owner: owner)
        }

        mutating func superEncoder() -> any Encoder {
            let storage = storage
            let index = count
            return JSONValueEncoder(path: elementPath) { storage.insert($0, at: index) }
        }
    }
}
