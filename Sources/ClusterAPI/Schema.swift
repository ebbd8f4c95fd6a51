import Foundation

/// The shape a resource body must have. Validation is strict: a member the schema does not name is an error
/// (`unknown field`), as `kubectl --validate=strict` would report it, so a typo never silently does nothing.
public indirect enum Schema: Sendable {
    /// An object with the named members (`required` must be present); `additional` allows any other member with
    /// that schema (maps such as labels).
    case object([String: Schema], required: Set<String> = [], additional: Schema? = nil)
    /// An array of elements.
    case array(Schema)
    /// A string, optionally one of `allowed`.
    case string(allowed: [String]? = nil)
    /// An integer, optionally at least `minimum` and at most `maximum`.
    case integer(minimum: Int64? = nil, maximum: Int64? = nil)
    /// A number.
    case number
    /// A boolean.
    case boolean
    /// A Kubernetes quantity: a number or a string such as "128Mi", "10Gi", "500m".
    case quantity
    /// Anything (free-form parts such as affinity rules or status written by the system).
    case any
    /// `schema`, then a rule across its members (run when the members themselves are valid).
    case checked(Schema, @Sendable (JSONValue, String) -> [FieldError])

    /// KubeVirt's `domain.cpu`: each count and their product at most `maxVCPUs`.
    static let cpu = Schema.checked(
        .fields([
            "model": .string(), "cores": .integer(minimum: 1, maximum: maxVCPUs),
            "sockets": .integer(minimum: 1, maximum: maxVCPUs),
            "threads": .integer(minimum: 1, maximum: maxVCPUs), "dedicatedCpuPlacement": .boolean, "features": .any,
        ])
    ) { value, path in
        let counts = ["cores", "sockets", "threads"].map { value[$0]?.int ?? 1 }
        let product = counts.reduce(1, *)
        guard product > maxVCPUs else { return [] }
        return [
            FieldError(
                field: path, reason: .invalid,
                message:
                    "Invalid value: cores × sockets × threads = \(counts.map(String.init).joined(separator: " × ")) = \(product) vCPUs: at most \(maxVCPUs)"
            )
        ]
    }

    /// The largest duration in seconds a setting may name (a year): products with sizes stay far from overflowing.
    public static let maxSeconds: Int64 = 31_536_000
    /// The most vCPUs a guest may have (cores × sockets × threads, and each of them).
    public static let maxVCPUs: Int64 = 512

    /// An object whose members are all optional.
    static func fields(_ members: [String: Schema]) -> Schema { .object(members) }
    /// A map of strings (labels, annotations, node selectors).
    static let stringMap = Schema.object([:], additional: .string())
    /// An empty object used as a marker (`blank: {}`, `masquerade: {}`).
    static let marker = Schema.object([:])

    /// Checks `value` at `path`; returns every problem found.
    public func validate(_ value: JSONValue, at path: String) -> [FieldError] {
        switch self {
        case .any:
            return []
        case .checked(let schema, let rule):
            let errors = schema.validate(value, at: path)
            return errors.isEmpty ? rule(value, path) : errors
        case .object(let members, let required, let additional):
            guard case .object(let object) = value else { return [typeError(path, "object", value)] }
            var errors: [FieldError] = []
            for name in required.sorted() where object[name] == nil || object[name] == .null {
                errors.append(FieldError(field: join(path, name), reason: .required, message: "Required value"))
            }
            for (name, member) in object.sorted(by: { $0.key < $1.key }) {
                if member == .null { continue }  // null means "unset", as Kubernetes treats it
                if let schema = members[name] ?? additional {
                    errors += schema.validate(member, at: join(path, name))
                } else {
                    errors.append(
                        FieldError(
                            field: join(path, name), reason: .unknown, message: "unknown field \"\(join(path, name))\"")
                    )
                }
            }
            return errors
        case .array(let element):
            guard case .array(let elements) = value else { return [typeError(path, "array", value)] }
            return elements.enumerated().flatMap { element.validate($1, at: "\(path)[\($0)]") }
        case .string(let allowed):
            guard case .string(let text) = value else { return [typeError(path, "string", value)] }
            if let allowed, !allowed.contains(text) {
                let list = allowed.map { "\"\($0)\"" }.joined(separator: ", ")
                return [
                    FieldError(
                        field: path, reason: .notSupported,
                        message: "Unsupported value: \"\(text)\": supported values: \(list)")
                ]
            }
            return []
        case .integer(let minimum, let maximum):
            guard let number = value.int, value.typeName != "string" else { return [typeError(path, "integer", value)] }
            if let minimum, number < minimum {
                return [
                    FieldError(
                        field: path, reason: .invalid, message: "Invalid value: \(number): must be at least \(minimum)")
                ]
            }
            if let maximum, number > maximum {
                return [
                    FieldError(
                        field: path, reason: .invalid, message: "Invalid value: \(number): must be at most \(maximum)")
                ]
            }
            return []
        case .number:
            switch value {
            case .int, .double: return []
            default: return [typeError(path, "number", value)]
            }
        case .boolean:
            guard case .bool = value else { return [typeError(path, "boolean", value)] }
            return []
        case .quantity:
            switch value {
            case .int(let number):
                return Quantity.inRange(Double(number)) ? [] : [Self.quantityRange(path, "\(number)")]
            case .double(let number):
                return Quantity.inRange(number) ? [] : [Self.quantityRange(path, "\(number)")]
            case .string(let text):
                if Quantity(text) != nil { return [] }
                if let value = Quantity.unbounded(text), value.isFinite {
                    return [Self.quantityRange(path, "\"\(text)\"")]
                }
                return [
                    FieldError(
                        field: path, reason: .invalid,
                        message:
                            "Invalid value: \"\(text)\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
                    )
                ]
            default: return [typeError(path, "quantity", value)]
            }
        }
    }

    private static func quantityRange(_ path: String, _ text: String) -> FieldError {
        FieldError(
            field: path, reason: .invalid,
            message: "Invalid value: \(text): quantities must be less than 2^63 (8Ei) in magnitude")
    }

    private func typeError(_ path: String, _ expected: String, _ value: JSONValue) -> FieldError {
        FieldError(
            field: path, reason: .typeInvalid,
            message:
                "Invalid value: \"\(value.typeName)\": \(path) in body must be of type \(expected): \(value.jsonString())"
        )
    }

    private func join(_ path: String, _ name: String) -> String { path.isEmpty ? name : "\(path).\(name)" }
}

/// A Kubernetes quantity ("128Mi", "2Gi", "1.5", "500m") as a number of base units, less than 2^63 in magnitude
/// (what fits the int64 counts Kubernetes keeps; `16Ei` or `1e20` is not a quantity here).
public struct Quantity: Sendable, Hashable {
    /// The value in base units (bytes for memory, cores for CPU).
    public var value: Double

    /// The largest magnitude a quantity may have: 2^63.
    public static let limit = 9_223_372_036_854_775_808.0

    /// Whether `value` is a quantity's value.
    public static func inRange(_ value: Double) -> Bool { value.isFinite && abs(value) < limit }

    /// Parses a quantity string; nil if it is not one or is out of range.
    public init?(_ text: String) {
        guard let value = Self.unbounded(text), Self.inRange(value) else { return nil }
        self.value = value
    }

    /// The value of a quantity string whatever its size (nil: not a quantity).
    static func unbounded(_ text: String) -> Double? {
        let suffixes: [(String, Double)] = [
            ("Ki", 1024), ("Mi", Double(1 << 20)), ("Gi", Double(1 << 30)), ("Ti", Double(1 << 40)),
            ("Pi", Double(1 << 50)),
            ("Ei", Double(1 << 60)), ("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12), ("P", 1e15), ("E", 1e18),
            ("m", 1e-3), ("u", 1e-6), ("n", 1e-9),
        ]
        var number = Substring(text.trimmingCharacters(in: .whitespaces))
        var factor = 1.0
        if let (suffix, multiplier) = suffixes.first(where: { number.hasSuffix($0.0) }) {
            number = number.dropLast(suffix.count)
            factor = multiplier
        }
        guard !number.isEmpty, let base = Double(number), base.isFinite else { return nil }
        return base * factor
    }

    /// From a JSON value (number or quantity string); nil if it is not one or is out of range.
    public init?(_ json: JSONValue?) {
        switch json {
        case .int(let number):
            // Int64.max as a Double rounds up to 2^63, out of range.
            guard Self.inRange(Double(number)) else { return nil }
            value = Double(number)
        case .double(let number):
            guard Self.inRange(number) else { return nil }
            value = number
        case .string(let text):
            guard let parsed = Quantity(text) else { return nil }
            self = parsed
        default: return nil
        }
    }

    /// Whole bytes (rounded up; never more than 2^63, so sums of a few stay representable).
    public var bytes: UInt64 { UInt64(min(Self.limit, max(0, value.rounded(.up)))) }
}

extension UInt64 {
    /// `self + other`, or `UInt64.max` where that overflows: sums of sizes that cannot trap.
    public func saturatingAdd(_ other: UInt64) -> UInt64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? .max : sum
    }
}
