// A bounded SMTP load from one of the sandbox's client namespaces (run it there with ip netns exec):
// sends COUNT messages with Message-IDs <PREFIX-i@load.sandbox.example> through a pool of STARTTLS
// connections, verifying the relay's certificate; retries temporary failures (4xx, dropped
// connections) like a real MTA, within a time bound. Prints one JSON summary line.
import * as fs from "node:fs";
import { parseArgs } from "node:util";
import nodemailer from "nodemailer";
import { runMain } from "./shell";

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      server: { type: "string" },
      name: { type: "string" },
      ca: { type: "string" },
      count: { type: "string", default: "100" },
      prefix: { type: "string", default: "load" },
      from: { type: "string", default: "alice@old.example" },
      to: { type: "string", default: "rcpt@partner.example" },
      connections: { type: "string", default: "4" },
      deadline: { type: "string", default: "240" },
      size: { type: "string", default: "2000" },
      rate: { type: "string", default: "0" },
      // Tenant A's key: every message is signed (nodemailer's DKIM signer), as Exchange Online would.
      "dkim-key": { type: "string" },
      "dkim-domain": { type: "string" },
      "dkim-selector": { type: "string" },
    },
  });
  const count = Number(values.count);
  const deadline = Date.now() + Number(values.deadline) * 1000;
  const transport = nodemailer.createTransport({
    host: values.server,
    port: 25,
    secure: false,
    requireTLS: true,
    pool: true,
    maxConnections: Number(values.connections),
    maxMessages: 200,
    name: "client.example",
    tls: {
      servername: values.name,
      ca: values.ca ? fs.readFileSync(values.ca) : undefined,
      minVersion: "TLSv1.2",
    },
    dkim: values["dkim-key"]
      ? {
          domainName: values["dkim-domain"]!,
          keySelector: values["dkim-selector"]!,
          privateKey: fs.readFileSync(values["dkim-key"], "utf8"),
        }
      : undefined,
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: 30_000,
  });
  const filler = "x".repeat(76) + "\r\n";
  const body = filler.repeat(Math.max(1, Math.ceil(Number(values.size) / filler.length)));
  const started = Date.now();
  let retries = 0;
  const failed: string[] = [];
  const errors: Record<string, number> = {};
  // When the relay accepted each message (epoch ms), so a test can prove what overlapped what.
  const acceptedAt: number[] = [];
  // And per Message-ID, for latency: the sink's receipt time minus this (same host clock).
  const acceptedById: Record<string, number> = {};
  const sendOne = async (i: number) => {
    const messageId = `<${values.prefix}-${i}@load.sandbox.example>`;
    for (let attempt = 0; ; attempt++) {
      try {
        await transport.sendMail({
          from: values.from,
          to: values.to,
          subject: `${values.prefix} ${i}`,
          messageId,
          text: body,
        });
        acceptedAt.push(Date.now());
        acceptedById[messageId] = acceptedAt[acceptedAt.length - 1];
        // Progress for whoever waits on this load while it runs.
        if (acceptedAt.length % 10 === 0) console.log(`accepted ${acceptedAt.length}`);
        return;
      } catch (e) {
        const err = e as { responseCode?: number; code?: string; message: string };
        const key = err.responseCode ? String(err.responseCode) : (err.code ?? "error");
        errors[key] = (errors[key] ?? 0) + 1;
        const permanent = err.responseCode !== undefined && err.responseCode >= 500;
        if (permanent || Date.now() > deadline) {
          failed.push(`${messageId}: ${err.message}`);
          return;
        }
        retries++;
        await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** Math.min(attempt, 4))));
      }
    }
  };
  // An optional pace (messages per second), so a load lasts long enough to overlap what a test does.
  const rate = Number(values.rate);
  let next = 0;
  const workers = Array.from({ length: Number(values.connections) * 2 }, async () => {
    while (next < count) {
      const i = next++;
      const due = rate > 0 ? started + (i * 1000) / rate : 0;
      if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
      await sendOne(i);
    }
  });
  await Promise.all(workers);
  transport.close();
  const seconds = (Date.now() - started) / 1000;
  console.log(
    JSON.stringify({
      prefix: values.prefix,
      count,
      accepted: count - failed.length,
      failed,
      retries,
      errors,
      seconds,
      perSecond: (count - failed.length) / seconds,
      acceptedAt,
      acceptedById,
    }),
  );
}

runMain(main);
