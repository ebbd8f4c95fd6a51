import ClusterAPI
import Foundation

/// The API server's JSON parser: any bytes either parse or fail with an APIError; what parses survives a round trip
/// through the writer (a whole-number double may come back as an integer, as with Foundation's encoder).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Data(bytes: data, count: size)
    guard let value = try? JSONValue.parse(bytes) else { return 0 }
    let written = value.jsonData()
    guard let again = try? JSONValue.parse(written) else {
        fatalError(
            "a parsed document does not parse again after serialisation: \(String(decoding: written, as: UTF8.self))")
    }
    if canonical(again) != canonical(value) {
        fatalError("round trip changed the document: \(value) → \(again)")
    }
    return 0
}

/// Numbers by value: a whole double equals the integer it is.
func canonical(_ value: JSONValue) -> JSONValue {
    switch value {
    case .double(let number) where number == number.rounded() && abs(number) < 9e18: .int(Int64(number))
    case .array(let elements): .array(elements.map(canonical))
    case .object(let members): .object(members.mapValues(canonical))
    default: value
    }
}
