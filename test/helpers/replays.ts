// Genuine tenant-A signatures reused by someone else (issue 26): extra copies of signed fields above
// the signed ones (a verifier hashes the last copy, RFC 6376 §5.4.2 and §8.15), a signature with l=
// and text after the signed length, the first Date the milter read. Shared by the one-node test
// (test/node/postfix-pinning.test.ts) and the sandbox (both nodes, from the impostor's namespace).
import { type Message, rfc5322Date as rfc5322 } from "../../sandbox/mail";
import type { DkimKey } from "../../sandbox/dkim";

export interface Replay {
  what: string;
  message: Omit<Message, "server">;
  /** The refusal (550 and the 5.7.x code), or the deferral (451 4.7.0), naming the check. */
  reply: RegExp;
}

const DAY = 86_400_000;
/** Adds a header field above the signed message (and its signature). */
const onTop = (field: string) => (signed: string) => `${field}\r\n${signed}`;

/** Each attack on a message from ALICE signed with tenant A's KEY. */
export function replays(key: DkimKey, alice: { from: string; headers: string[] }): Replay[] {
  /** The genuine message carries NAME once (its own, or GENUINE); the attacker adds a copy on top. */
  const twice = (name: string, genuine: string | undefined, forged: string): Replay => ({
    what: `a genuine message with a second ${name} on top`,
    message: {
      ...alice,
      dkim: key,
      headers: genuine ? [...alice.headers, `${name}: ${genuine}`] : alice.headers,
      alter: onTop(`${name}: ${forged}`),
    },
    reply: new RegExp(`^550 5\\.7\\.1 .*the message has 2 ${name} fields`),
  });
  // Older than the default window (7 days): a genuine message someone kept and sends again.
  const aged = [...alice.headers, `Date: ${rfc5322(Date.now() - 10 * DAY)}`];
  return [
    {
      what: "a genuine signature ten days old, replayed with a fresh Date on top",
      message: { ...alice, dkim: key, headers: aged, alter: onTop(`Date: ${rfc5322(Date.now())}`) },
      reply: /^550 5\.7\.1 .*the message has 2 Date fields \(RFC 5322 allows one/,
    },
    {
      // Deferred, not refused: a Date ahead replays nothing yet, and it may be a clock's fault.
      what: "a genuine signature dated 3 h 5 min ahead (the window's other end)",
      message: {
        ...alice,
        dkim: key,
        headers: [...alice.headers, `Date: ${rfc5322(Date.now() + 185 * 60_000)}`],
      },
      reply: /^451 4\.7\.0 .*the signed Date is 3 h [45] min in the future \(at most 2 h allowed; /,
    },
    {
      what: "a genuine signature ten days old (the signed Date)",
      message: { ...alice, dkim: key, headers: aged },
      reply: /^550 5\.7\.1 .*the signed Date is 240 h 0 min old \(max-age 168 h\): a replayed message\?/,
    },
    // Fields a message has once (RFC 5322 §3.6): Exchange Online signs From, Subject and Content-Type,
    // not Reply-To or Sender (which the relay rewrites).
    twice("From", undefined, "CEO <ceo@old.example>"),
    twice("Subject", undefined, "Urgent: new bank details"),
    twice("Reply-To", "alice@old.example", "payments@impostor.example"),
    twice("Sender", "alice@old.example", "ceo@old.example"),
    twice("Content-Type", "text/plain; charset=us-ascii", 'multipart/mixed; boundary="x"'),
    {
      what: "a signature with l= and a paragraph appended after the signed length",
      message: {
        ...alice,
        dkim: { ...key, length: true },
        alter: (s) => `${s}\r\nPS: our bank details changed, pay to DE00 0000 0000 0000.\r\n`,
      },
      reply: /^550 5\.7\.21 .*has l= \(a body length limit/,
    },
  ];
}
