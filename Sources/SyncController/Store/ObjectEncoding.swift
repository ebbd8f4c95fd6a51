import ClusterAPI
import Foundation

/// How an object is kept in a storage backend: JSON without `metadata.resourceVersion` (the backend's revision of the
/// key is the resourceVersion, as in Kubernetes over etcd, so a value never has to know the revision it will be written
/// at), with `metadata` as the first member so the version can be put back into the text without parsing it.
enum ObjectEncoding {
    /// `{"metadata":{`: how every value this encoding wrote begins.
    private static let head = Array(#"{"metadata":{"#.utf8)

    /// The bytes to store for `object` (its resourceVersion left out).
    static func encode(_ object: JSONValue) -> Data {
        var metadata = object["metadata"] ?? [:]
        metadata["resourceVersion"] = nil
        var rest = object
        rest["metadata"] = nil
        var bytes = Data(#"{"metadata":"#.utf8)
        bytes.append(metadata.jsonData())
        let body = rest.jsonData()
        if body.count > 2 {
            bytes.append(UInt8(ascii: ","))
            bytes.append(body.dropFirst())
        } else {
            bytes.append(UInt8(ascii: "}"))
        }
        return bytes
    }

    /// The stored object with its resourceVersion (`revision`), or nil when the bytes are not a JSON object.
    static func decode(_ value: Data, revision: Int64) -> JSONValue? {
        // The version spliced into the text costs a copy of the bytes; set into the parsed object it would cost
        // copies of its metadata and of the object.
        if let document = splice(value, revision: revision) { return try? JSONValue.parse(document) }
        guard var object = try? JSONValue.parse(value), case .object = object else { return nil }
        var metadata = object["metadata"] ?? [:]
        metadata["resourceVersion"] = .string(String(revision))
        object["metadata"] = metadata
        return object
    }

    /// The stored object's JSON text with its resourceVersion (`revision`), without parsing it when this encoding
    /// wrote it (a list answers with the stored documents as they are); other text (a store upgraded from the
    /// object schema) is parsed and written again.
    static func document(_ value: Data, revision: Int64) -> Data? {
        splice(value, revision: revision) ?? decode(value, revision: revision)?.jsonData()
    }

    /// The documents of a list. Each stored value is let go as its document is made, so a list holds one copy of the
    /// objects at a time, not two.
    static func documents(_ values: consuming [StoredValue]) -> [Data] {
        var documents: [Data] = []
        documents.reserveCapacity(values.count)
        for index in values.indices {
            let stored = values[index]
            values[index].value = Data()
            if let text = document(stored.value, revision: stored.revision) { documents.append(text) }
        }
        return documents
    }

    /// The text with `"resourceVersion":"<revision>"` put first into its metadata, or nil when this encoding did not
    /// write it: one allocation and plain copies (a list of ten thousand objects does this ten thousand times).
    private static func splice(_ value: Data, revision: Int64) -> Data? {
        value.withUnsafeBytes { (source: UnsafeRawBufferPointer) -> Data? in
            guard source.count > head.count + 1, source.starts(with: head), source[head.count] != UInt8(ascii: "}")
            else {
                return nil
            }
            var digits = String(revision)
            return digits.withUTF8 { digits -> Data in
                var document = Data(count: source.count + versionKey.count + digits.count + versionEnd.count)
                document.withUnsafeMutableBytes { target in
                    var offset = 0
                    func put(_ part: UnsafeRawBufferPointer) {
                        UnsafeMutableRawBufferPointer(rebasing: target[offset..<(offset + part.count)]).copyMemory(
                            from: part)
                        offset += part.count
                    }
                    put(UnsafeRawBufferPointer(rebasing: source[..<head.count]))
                    versionKey.withUnsafeBytes { put($0) }
                    put(UnsafeRawBufferPointer(digits))
                    versionEnd.withUnsafeBytes { put($0) }
                    put(UnsafeRawBufferPointer(rebasing: source[head.count...]))
                }
                return document
            }
        }
    }

    /// `"resourceVersion":"` and `",`: what `splice` puts around the version.
    private static let versionKey = Array(#""resourceVersion":""#.utf8)
    private static let versionEnd = Array(#"","#.utf8)
}
