// The retry handler of the user's plan (retry-failed-tasks-plan.md §2.2), as written there:
// `findOne({taskId})`, the checks in JavaScript, `updateOne({taskId})`, then `publishJSON` to
// QStash with the official clients (`mongodb`, `@upstash/qstash`). `scripts/bench plan` runs it
// beside the service against the same database and the same QStash sink (bench/src/plan.rs).
//
// Environment: PORT, MONGODB_URI, MONGODB_DB, QSTASH_TOKEN, QSTASH_URL (the sink),
// QSTASH_BASE_URL and USE_QSTASH_IN_DEV=true (the plan's development switch to QStash, as the
// service is run). Serves POST /api/index.js?service=jobs&action=retry {taskId, userId}, and
// GET /health once MongoDB answers.
import http from 'node:http';
import { MongoClient } from 'mongodb';
import { Client } from '@upstash/qstash';

const env = process.env;
const client = new MongoClient(env.MONGODB_URI);
const qstashClient = env.QSTASH_TOKEN
  ? new Client({ token: env.QSTASH_TOKEN, baseUrl: env.QSTASH_URL })
  : null;

async function getClientAndDb() {
  await client.connect();
  return { client, db: client.db(env.MONGODB_DB) };
}

// §2.2, unchanged but for the imports.
async function retryTask(requestBody) {
  // 1. VALIDATION
  const { taskId, userId } = requestBody;
  if (!taskId || !userId) throw new Error('Missing required fields: taskId, userId');

  const { db } = await getClientAndDb();
  const tasksCollection = db.collection('tasks');
  const task = await tasksCollection.findOne({ taskId });

  if (!task) throw new Error(`Task with ID ${taskId} not found`);
  if (task.userId !== userId) throw new Error('Unauthorized: You do not own this task');
  if (task.status !== 'failed') throw new Error('Only failed tasks can be retried.');
  if (task.retryCount >= task.maxRetries) throw new Error(`Max retries (${task.maxRetries}) reached.`);

  // 2. UPDATE DATABASE
  await tasksCollection.updateOne(
    { taskId },
    {
      $set: {
        status: 'queued',
        progress: 0,
        lastError: null,
        updatedAt: new Date(),
      },
      $inc: { retryCount: 1 },
    },
  );

  // 3. RE-QUEUE TASK (CRITICAL STEP)
  try {
    const isProduction = env.VERCEL_ENV === 'production' || env.NODE_ENV === 'production';
    const hasQStashConfig = qstashClient;
    const useQStashInDev = env.USE_QSTASH_IN_DEV === 'true';
    const shouldUseQStash = isProduction || (useQStashInDev && hasQStashConfig);

    if (shouldUseQStash && qstashClient) {
      let baseUrl;
      if (isProduction) {
        baseUrl = `https://${env.VERCEL_URL}`;
      } else if (env.QSTASH_BASE_URL) {
        baseUrl = env.QSTASH_BASE_URL;
      } else {
        throw new Error('QStash is enabled in development, but QSTASH_BASE_URL (your ngrok URL) is not set.');
      }

      const destinationUrl = `${baseUrl}/api/index.js?service=jobs&action=process`;

      await qstashClient.publishJSON({
        url: destinationUrl,
        body: { taskId: task.taskId },
        method: 'POST',
      });
      console.log(`[API/Jobs] Task ${taskId} re-published to QStash for retry.`);
    } else {
      throw new Error('the benchmark runs the plan with QStash (USE_QSTASH_IN_DEV=true)');
    }
  } catch (error) {
    console.error(`[API/Jobs] Failed to re-queue task ${taskId} for retry.`, error);
    await tasksCollection.updateOne({ taskId }, { $set: { status: 'failed', lastError: 'Failed to re-queue task.' } });
    throw error;
  }

  return { success: true, taskId: task.taskId };
}

function answer(response, status, body) {
  response.writeHead(status, { 'content-type': 'application/json' });
  response.end(JSON.stringify(body));
}

const server = http.createServer((request, response) => {
  const url = new URL(request.url, 'http://localhost');
  if (request.method === 'GET' && url.pathname === '/health') {
    getClientAndDb()
      .then(({ db }) => db.command({ ping: 1 }))
      .then(() => answer(response, 200, { ok: true }), (error) => answer(response, 503, { error: error.message }));
    return;
  }
  const isRetry = request.method === 'POST' && url.pathname === '/api/index.js'
    && url.searchParams.get('service') === 'jobs' && url.searchParams.get('action') === 'retry';
  if (!isRetry) {
    answer(response, 404, { error: 'not found' });
    return;
  }
  const chunks = [];
  request.on('data', (chunk) => chunks.push(chunk));
  request.on('end', async () => {
    try {
      const body = JSON.parse(Buffer.concat(chunks).toString() || '{}');
      answer(response, 200, await retryTask(body));
    } catch (error) {
      answer(response, 400, { error: error.message });
    }
  });
});

server.listen(Number(env.PORT), '127.0.0.1');
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => client.close().finally(() => process.exit(0))));
}
