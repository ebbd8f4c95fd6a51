import ControllerRuntime
import Testing

@Suite("Work queue: de-duplication, one worker per key, backoff, rate limit")
struct WorkQueueTests {
    @Test("a key added while waiting is handed out once")
    func deduplicates() async {
        let queue = WorkQueue<String>()
        for key in ["a", "b", "a", "a", "b", "c"] { queue.add(key) }
        #expect(queue.depth == 3)
        var seen: [String] = []
        for _ in 0..<3 {
            guard let key = await queue.next() else { break }
            seen.append(key)
            queue.done(key)
        }
        #expect(seen == ["a", "b", "c"])
        #expect(queue.depth == 0)
    }

    @Test("a key added while being processed comes back after done, not to a second worker")
    func oneWorkerPerKey() async {
        let queue = WorkQueue<String>()
        queue.add("a")
        let first = await queue.next()
        queue.add("a")
        #expect(queue.depth == 0, "not handed out while its worker runs")
        queue.done("a")
        #expect(queue.depth == 1)
        #expect(first == "a")
        #expect(await queue.next() == "a")
    }

    @Test("a waiting worker gets a key as soon as it is added; shutdown releases workers")
    func waitingWorkers() async {
        let queue = WorkQueue<Int>()
        async let got = queue.next()
        try? await Task.sleep(for: .milliseconds(20))
        queue.add(7)
        #expect(await got == 7)
        async let none = queue.next()
        try? await Task.sleep(for: .milliseconds(20))
        queue.shutDown()
        #expect(await none == nil)
    }

    @Test("failures back off exponentially per key; success forgets them")
    func backoff() async throws {
        let queue = WorkQueue<String>(
            backoff: .init(base: .milliseconds(40), maximum: .milliseconds(200)),
            rateLimit: .init(perSecond: 1000, burst: 1000))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await queue.runTimers(granularity: .milliseconds(5)) }
            let clock = ContinuousClock()
            var delays: [Duration] = []
            for _ in 0..<4 {
                let start = clock.now
                queue.retry("k")
                _ = await queue.next()
                delays.append(start.duration(to: clock.now))
                queue.done("k")
            }
            #expect(queue.failureCount("k") == 4)
            #expect(
                delays[0] >= .milliseconds(40) && delays[1] >= .milliseconds(80) && delays[2] >= .milliseconds(160),
                "\(delays)")
            #expect(delays[3] >= .milliseconds(200), "\(delays)")
            // The cap, from the rule itself (a loaded machine may stretch any measured wait).
            let rule = WorkQueue<String>.Backoff(base: .milliseconds(40), maximum: .milliseconds(200))
            #expect(rule.delay(failures: 1) == .milliseconds(40) && rule.delay(failures: 3) == .milliseconds(160))
            #expect(rule.delay(failures: 4) == .milliseconds(200) && rule.delay(failures: 60) == .milliseconds(200))
            queue.forget("k")
            #expect(queue.failureCount("k") == 0)
            group.cancelAll()
        }
    }

    @Test("retries of many keys are held to the overall rate")
    func rateLimit() async throws {
        let queue = WorkQueue<Int>(
            backoff: .init(base: .milliseconds(1), maximum: .milliseconds(1)), rateLimit: .init(perSecond: 50, burst: 5)
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await queue.runTimers(granularity: .milliseconds(5)) }
            let clock = ContinuousClock()
            let start = clock.now
            for key in 0..<25 { queue.retry(key) }
            for _ in 0..<25 {
                let key = await queue.next()
                if let key { queue.done(key) }
            }
            // 5 at once from the burst, 20 more at 50 a second: about 400 ms.
            let elapsed = start.duration(to: clock.now)
            #expect(elapsed >= .milliseconds(350) && elapsed < .seconds(20), "\(elapsed)")
            group.cancelAll()
        }
    }

    @Test("a delayed add is superseded by an earlier one, and an immediate add does not wait")
    func delayedAdds() async throws {
        let queue = WorkQueue<String>()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await queue.runTimers(granularity: .milliseconds(5)) }
            queue.add("x", after: .seconds(30))
            queue.add("x", after: .milliseconds(10))
            #expect(queue.delayed == 1)
            let clock = ContinuousClock()
            let start = clock.now
            #expect(await queue.next() == "x")
            // Not the 30 s one (the bound is loose: a loaded machine runs the whole tier on two cores).
            #expect(start.duration(to: clock.now) < .seconds(20))
            group.cancelAll()
        }
    }

    @Test("idle: nothing waiting, nothing in work, nothing due within the horizon")
    func idle() async {
        let queue = WorkQueue<String>()
        #expect(queue.isIdle())
        queue.add("a")
        #expect(!queue.isIdle(), "a key waits")
        let key = await queue.next()
        #expect(key == "a" && !queue.isIdle(), "a key is in work")
        queue.done("a")
        #expect(queue.isIdle())
        queue.add("b", after: .seconds(60))
        #expect(queue.isIdle(), "a requeue a minute away is not work in flight")
        queue.add("c", after: .milliseconds(100))
        #expect(!queue.isIdle(), "a retry due soon is")
    }
}
