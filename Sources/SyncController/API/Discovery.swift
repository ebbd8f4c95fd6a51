import ClusterAPI
import Foundation

/// API discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/GROUP/VERSION`) so kubectl finds the kinds and their
/// short names (`kubectl get vm`, `vmi`, `vmim`).
enum Discovery {
    static let apiVersions: JSONValue = [
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [["clientCIDR": "0.0.0.0/0", "serverAddress": ""]],
    ]

    static var groupList: JSONValue {
        var groups: [String: Set<String>] = [:]
        for kind in Kinds.all where !kind.group.isEmpty { groups[kind.group, default: []].insert(kind.version) }
        return [
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": .array(
                groups.keys.sorted().map { group in
                    let versions = groups[group]!.sorted()
                    return [
                        "name": .string(group),
                        "versions": .array(
                            versions.map { ["groupVersion": .string("\(group)/\($0)"), "version": .string($0)] }),
                        "preferredVersion": [
                            "groupVersion": .string("\(group)/\(versions[0])"), "version": .string(versions[0]),
                        ],
                    ]
                }),
        ]
    }

    static func resourceList(group: String, version: String) -> JSONValue? {
        let kinds = Kinds.all.filter { $0.group == group && $0.version == version }
        guard !kinds.isEmpty else { return nil }
        let verbs: JSONValue = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        var resources: [JSONValue] = []
        for kind in kinds {
            resources.append([
                "name": .string(kind.plural), "singularName": .string(kind.singular),
                "namespaced": .bool(kind.namespaced),
                "kind": .string(kind.kind), "verbs": verbs, "shortNames": .array(kind.shortNames.map { .string($0) }),
            ])
            if kind.hasStatus {
                resources.append([
                    "name": .string(kind.plural + "/status"), "singularName": "", "namespaced": .bool(kind.namespaced),
                    "kind": .string(kind.kind), "verbs": ["get", "patch", "update"],
                ])
            }
        }
        return [
            "kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": .string(group.isEmpty ? version : "\(group)/\(version)"), "resources": .array(resources),
        ]
    }

    static func namespace(_ name: String) -> JSONValue {
        ["apiVersion": "v1", "kind": "Namespace", "metadata": ["name": .string(name)], "status": ["phase": "Active"]]
    }
}

/// `meta.k8s.io/v1` Tables, the columns `kubectl get` shows.
enum Tables {
    static func table(_ kind: ResourceKind, _ items: [JSONValue], resourceVersion: Int64?) -> JSONValue {
        var definitions: [JSONValue] = [["name": "Name", "type": "string", "format": "name"]]
        for column in kind.columns {
            definitions.append(["name": .string(column.name.capitalized), "type": "string"])
        }
        let rows: [JSONValue] = items.map { item in
            var cells: [JSONValue] = [item["metadata"]?["name"] ?? ""]
            for column in kind.columns {
                let value = item[path: column.path]
                cells.append(
                    column.path.last == "creationTimestamp"
                        ? .string(Resources.age(value?.string))
                        : (value.map { .string($0.string ?? $0.jsonString()) } ?? ""))
            }
            return [
                "cells": .array(cells),
                "object": [
                    "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                    "metadata": item["metadata"] ?? [:],
                ],
            ]
        }
        var metadata: JSONValue = [:]
        if let resourceVersion { metadata["resourceVersion"] = .string(String(resourceVersion)) }
        return [
            "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
            "columnDefinitions": .array(definitions), "rows": .array(rows),
        ]
    }
}
