#!/usr/bin/env node
// Publish one amqp-worker job from Node.js, following docs/job.schema.json.
//
//   npm ci
//   AMQP_WORKER_URL=amqp://guest:guest@127.0.0.1:5672/ node publish.js emails send_email '{"user_id": 42}'
//
// Arguments: queue, handler, args as a JSON object (defaults: default, hello, {}).
// AMQP_WORKER_NAME, AMQP_WORKER_QUEUE_PREFIX and AMQP_WORKER_QUEUE_TYPE are read as
// the Python worker reads them.
// Prints the job id once RabbitMQ has confirmed the job; exits 1 on any failure.
"use strict";

const crypto = require("node:crypto");
const amqp = require("amqplib");

async function main() {
  const [queue = "default", handler = "hello", argsJson = "{}"] = process.argv.slice(2);
  const args = JSON.parse(argsJson);
  if (args === null || typeof args !== "object" || Array.isArray(args)) {
    throw new Error("args must be a JSON object");
  }
  const url = process.env.AMQP_WORKER_URL || "amqp://guest:guest@localhost:5672/";
  const name = process.env.AMQP_WORKER_NAME || "amqp_worker";
  const prefix = process.env.AMQP_WORKER_QUEUE_PREFIX || "";
  const queueType = process.env.AMQP_WORKER_QUEUE_TYPE || "classic";

  // The wire format: only handler is required; the rest has defaults.
  const job = {
    handler,
    queue,
    args,
    id: crypto.randomUUID(),
    attempt: 0,
    enqueued_at: new Date().toISOString(),
  };

  const connection = await connectToOne(url);
  try {
    const channel = await connection.createConfirmChannel();
    let returned = null;
    channel.on("return", (message) => {
      returned = message;
    });
    // Declare what amqp-worker declares, with the same arguments (durable; none for
    // classic queues, x-queue-type for quorum ones), so a job published before any
    // worker ever ran is kept. Identical declarations are no-ops; different ones
    // would fail with a 406 PRECONDITION_FAILED.
    // Quorum queues also carry a delivery limit and dead-letter into the failed-jobs
    // queue (amqp_worker._rabbitmq.topology); a queue that already exists is used as it is.
    await channel.assertExchange(name, "direct", { durable: true });
    if (queueType === "quorum") {
      const failed = `${name}.failed.${prefix}${queue}`;
      await ensureQueue(connection, failed, { "x-queue-type": "quorum", "x-delivery-limit": 2147483647 });
      await ensureQueue(connection, prefix + queue, {
        "x-queue-type": "quorum",
        "x-delivery-limit": Number(process.env.AMQP_WORKER_DELIVERY_LIMIT || 1000),
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": failed,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
      });
    } else {
      await channel.assertQueue(prefix + queue, { durable: true, arguments: {} });
    }
    await channel.bindQueue(prefix + queue, name, queue);

    channel.publish(name, queue, Buffer.from(JSON.stringify(job)), {
      persistent: true,
      mandatory: true, // an unroutable job comes back instead of vanishing
      contentType: "application/json",
      messageId: job.id,
      type: handler,
      timestamp: Math.floor(Date.now() / 1000),
      headers: { "aw-attempt": 0 },
    });
    await channel.waitForConfirms(); // rejects if the broker nacked it
    if (returned !== null) {
      throw new Error(`job ${job.id} was returned: no queue is bound for ${queue}`);
    }
    await channel.close();
    console.log(job.id);
  } finally {
    await connection.close();
  }
}

// AMQP_WORKER_URL may list the nodes of one cluster, comma-separated: use the first that answers.
async function connectToOne(urls) {
  let last = null;
  for (const url of urls.split(/,\s*(?=amqps?:\/\/)/)) {
    try {
      return await amqp.connect(url.trim());
    } catch (error) {
      last = error;
    }
  }
  throw last;
}

// Declare a queue only if it does not exist yet, so its arguments never conflict.
async function ensureQueue(connection, queueName, args) {
  const probe = await connection.createChannel();
  probe.on("error", () => {}); // a missing queue closes the probe channel with a 404
  try {
    await probe.checkQueue(queueName);
    await probe.close();
    return;
  } catch {
    // missing: declare it below
  }
  const channel = await connection.createChannel();
  await channel.assertQueue(queueName, { durable: true, arguments: args });
  await channel.close();
}

main().catch((error) => {
  console.error(`publish.js: ${error.message}`);
  process.exit(1);
});
