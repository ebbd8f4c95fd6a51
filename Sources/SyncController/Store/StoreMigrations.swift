import GRDB

/// The store's schema, as named, append-only migrations: a released migration is never edited, a change is a new one.
enum StoreMigrations {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("2026-11-21-objects-changes-counters") { db in
            try db.execute(sql: """
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
        return migrator
    }
}
