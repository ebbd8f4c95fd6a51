import GRDB

/// The store's schema, as named, append-only migrations: a released migration is never edited, a change is a new one.
enum StoreMigrations {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("2026-11-21-objects-changes-counters") { db in
            try db.execute(
                sql: """
                    CREATE TABLE objects (
                        resource TEXT NOT NULL,
                        namespace TEXT NOT NULL,
                        name TEXT NOT NULL,
                        uid TEXT NOT NULL UNIQUE,
                        resource_version INTEGER NOT NULL CHECK (resource_version > 0),
                        body TEXT NOT NULL CHECK (json_valid(body)),
                        PRIMARY KEY (resource, namespace, name)
                    );
                    CREATE TABLE owner_references (
                        owner_uid TEXT NOT NULL,
                        dependent_uid TEXT NOT NULL REFERENCES objects (uid) ON DELETE CASCADE,
                        PRIMARY KEY (owner_uid, dependent_uid)
                    );
                    CREATE INDEX owner_references_by_dependent ON owner_references (dependent_uid);
                    CREATE TABLE changes (
                        resource_version INTEGER PRIMARY KEY,
                        type TEXT NOT NULL CHECK (type IN ('ADDED', 'MODIFIED', 'DELETED')),
                        resource TEXT NOT NULL,
                        namespace TEXT NOT NULL,
                        name TEXT NOT NULL,
                        body TEXT NOT NULL
                    );
                    CREATE INDEX changes_by_resource ON changes (resource, resource_version);
                    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
                    INSERT INTO counters (name, value) VALUES ('resourceVersion', 0), ('compactedThrough', 0);
                    """)
        }
        // The store becomes a key-value backend with a revision counter (object semantics moved above it, owner
        // references to the garbage collector): objects and their history are carried over under their keys, at
        // the same revisions, so watches resume across the upgrade.
        migrator.registerMigration("2026-12-21-key-value-backend") { db in
            try db.execute(
                sql: """
                    CREATE TABLE kv (
                        key BLOB PRIMARY KEY CHECK (length(key) > 0),
                        value BLOB NOT NULL,
                        revision INTEGER NOT NULL CHECK (revision > 0)
                    ) WITHOUT ROWID;
                    CREATE TABLE kv_changes (
                        revision INTEGER PRIMARY KEY CHECK (revision > 0),
                        kind TEXT NOT NULL CHECK (kind IN ('CREATE', 'UPDATE', 'DELETE')),
                        key BLOB NOT NULL,
                        value BLOB NOT NULL
                    );
                    CREATE TABLE kv_revision (
                        id INTEGER PRIMARY KEY CHECK (id = 1),
                        revision INTEGER NOT NULL CHECK (revision >= 0),
                        compacted INTEGER NOT NULL CHECK (compacted >= 0 AND compacted <= revision)
                    );
                    INSERT INTO kv (key, value, revision)
                        SELECT CAST('/' || resource || '/' || CASE namespace WHEN '' THEN '' ELSE namespace || '/' END || name AS BLOB),
                            CAST(body AS BLOB), resource_version
                        FROM objects;
                    INSERT INTO kv_changes (revision, kind, key, value)
                        SELECT resource_version,
                            CASE type WHEN 'ADDED' THEN 'CREATE' WHEN 'MODIFIED' THEN 'UPDATE' ELSE 'DELETE' END,
                            CAST('/' || resource || '/' || CASE namespace WHEN '' THEN '' ELSE namespace || '/' END || name AS BLOB),
                            CAST(body AS BLOB)
                        FROM changes;
                    INSERT INTO kv_revision (id, revision, compacted) VALUES (
                        1,
                        (SELECT value FROM counters WHERE name = 'resourceVersion'),
                        (SELECT min(value, (SELECT value FROM counters WHERE name = 'resourceVersion')) FROM counters WHERE name = 'compactedThrough'));
                    DROP TABLE owner_references;
                    DROP TABLE objects;
                    DROP TABLE changes;
                    DROP TABLE counters;
                    """)
        }
        return migrator
    }
}
