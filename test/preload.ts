// edgeproxy defaults to one worker process per CPU. Most tests are about one
// data plane and read its figures from one process, so they run one worker
// unless they ask for more (--workers N, as test/workers.test.ts does).
process.env.EDGEPROXY_WORKERS ??= "1";
