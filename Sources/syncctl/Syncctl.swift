import ArgumentParser
import Foundation
import TLSTransport

/// The vmsync command-line client.
@main
struct Syncctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "syncctl",
        abstract: "Drive vmsync: cluster resources, the cluster PKI; migrations and USB devices as they land.",
        subcommands: [
            Apply.self, Get.self, Describe.self, Delete.self, Migrate.self, Abort.self, ConfigCommand.self,
            CACommand.self,
        ]
    )
}

/// Runs a command body and turns any failure into one line on stderr and exit status 1.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as TransportError {
        FileHandle.standardError.write(Data("syncctl: \(error.message)\n".utf8))
        throw ExitCode(1)
    }
}
