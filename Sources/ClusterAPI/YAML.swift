import Foundation
import Yams

/// YAML in and out: manifests (several documents per file), `-o yaml`, request bodies.
public enum YAML {
    /// Parses every document of a (multi-document) YAML text; empty documents are skipped.
    public static func documents(_ text: String) throws(APIError) -> [JSONValue] {
        do {
            // The parser throws at the first malformed document (a lazy sequence would just stop there).
            let parser = try Parser(yaml: text)
            var values: [JSONValue] = []
            while let node = try parser.nextRoot() {
                let value = try convert(node)
                if value != .null { values.append(value) }
            }
            return values
        } catch let error as APIError {
            throw error
        } catch let error as YamlError {
            throw APIError.badRequest("the YAML is malformed: \(describe(error))")
        } catch {
            throw APIError.badRequest("the YAML is malformed: \(error)")
        }
    }

    /// Parses exactly one document.
    public static func document(_ text: String) throws(APIError) -> JSONValue {
        let all = try documents(text)
        guard all.count == 1 else { throw APIError.badRequest("expected one YAML document, found \(all.count)") }
        return all[0]
    }

    /// YAML text for a value (keys sorted).
    public static func text(_ value: JSONValue) -> String {
        (try? Yams.serialize(node: node(value), sortKeys: true)) ?? "null\n"
    }

    private static func convert(_ node: Yams.Node) throws -> JSONValue {
        // The parser expands an alias into the node its anchor names, so a small text can stand for an exponentially
        // large document ("billion laughs"): anchors are refused where they are defined, before anything is expanded.
        if let anchor = node.anchor {
            throw APIError.badRequest(
                "the YAML defines the anchor &\(anchor.rawValue) at line \(node.mark?.line ?? 0): anchors and aliases are not accepted"
            )
        }
        switch node {
        case .scalar(let scalar):
            if scalar.style != .plain { return .string(scalar.string) }
            switch node.tag.description {
            case Tag.Name.null.rawValue: return .null
            case Tag.Name.bool.rawValue: return .bool(Bool.construct(from: scalar) ?? false)
            case Tag.Name.int.rawValue:
                if let number = integer(scalar.string) { return .int(number) }
                return .string(scalar.string)
            case Tag.Name.float.rawValue:
                if let number = Double.construct(from: scalar) { return .double(number) }
                return .string(scalar.string)
            default: return .string(scalar.string)
            }
        case .mapping(let mapping):
            var object: [String: JSONValue] = [:]
            for (key, value) in mapping {
                guard case .scalar(let scalar) = key else {
                    throw APIError.badRequest(
                        "the YAML is malformed: a mapping key at line \(key.mark?.line ?? 0) is not a string")
                }
                object[scalar.string] = try convert(value)
            }
            return .object(object)
        case .sequence(let sequence):
            return .array(try sequence.map(convert))
        case .alias:
            throw APIError.badRequest("the YAML uses an alias, which the API does not accept")
        }
    }

    /// A YAML integer (decimal, `0x`, `0o`, `0b`, with `_` separators), nil beyond Int64 or in base 60 (`1:30`, which
    /// Kubernetes' reader takes as text too). Yams' own conversion multiplies base-60 parts without overflow checks.
    static func integer(_ text: String) -> Int64? {
        var digits = Substring(text.replacingOccurrences(of: "_", with: ""))
        var negative = false
        if let sign = digits.first, sign == "-" || sign == "+" {
            negative = sign == "-"
            digits = digits.dropFirst()
        }
        var radix = 10
        for (prefix, base) in [("0x", 16), ("0o", 8), ("0b", 2)] where digits.hasPrefix(prefix) {
            digits = digits.dropFirst(2)
            radix = base
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isHexDigit }) else { return nil }
        return Int64((negative ? "-" : "") + digits, radix: radix)
    }

    private static func node(_ value: JSONValue) -> Yams.Node {
        switch value {
        case .null: return Yams.Node("null", Tag(.null))
        case .bool(let flag): return Yams.Node(flag ? "true" : "false", Tag(.bool))
        case .int(let number): return Yams.Node(String(number), Tag(.int))
        case .double(let number): return Yams.Node(String(number), Tag(.float))
        case .string(let text):
            // Quote strings a YAML reader would take for something else ("true", "1", "null", "").
            let node = Yams.Node(text, Tag(.str))
            if case .scalar(var scalar) = node,
                (try? Yams.compose(yaml: text))??.tag.description != Tag.Name.str.rawValue || text.isEmpty
            {
                scalar.style = .doubleQuoted
                return .scalar(scalar)
            }
            return node
        case .array(let elements): return Yams.Node(elements.map(node))
        case .object(let members):
            return Yams.Node(members.sorted { $0.key < $1.key }.map { (Yams.Node($0.key), node($0.value)) })
        }
    }

    private static func describe(_ error: YamlError) -> String {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _):
            let where_ = "line \(mark.line), column \(mark.column)"
            return [context?.text, problem, where_].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: ": ")
        default:
            return "\(error)"
        }
    }
}
