// Stands in for OVH's DNS zone API (https://eu.api.ovh.com/1.0, the calls certbot-dns-ovh makes
// through dns-lexicon: auth/time, zone list and status, record create/list/get/delete, refresh)
// and for OVH's name servers: the TXT records written through it are served over DNS, where
// Pebble validates dns-01. Every request is logged with the headers OVH's API requires.
// usage: tsx ovh-api.ts --dir D --address IP --zones a.example,b.example --cert C --key K --ns NAME
import * as fs from "node:fs";
import * as https from "node:https";
import * as path from "node:path";
import { parseArgs } from "node:util";
import dns2 from "dns2";

const { values } = parseArgs({
  options: {
    dir: { type: "string" },
    address: { type: "string" },
    zones: { type: "string" },
    cert: { type: "string" },
    key: { type: "string" },
    ns: { type: "string" },
  },
});
const dir = values.dir!;
const zones = values.zones!.split(",");
const log = (line: string) => fs.appendFileSync(path.join(dir, "requests.log"), `${line}\n`);

interface ZoneRecord {
  id: number;
  zone: string;
  fieldType: string;
  subDomain: string;
  target: string;
  ttl: number;
}
const records: ZoneRecord[] = [];
let nextId = 1;

function reply(res: import("node:http").ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

const api = https.createServer(
  { cert: fs.readFileSync(values.cert!), key: fs.readFileSync(values.key!) },
  (req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "https://eu.api.ovh.com");
      const signed = ["x-ovh-application", "x-ovh-consumer", "x-ovh-signature", "x-ovh-timestamp"].every(
        (h) => typeof req.headers[h] === "string",
      );
      log(
        `${req.method} ${url.pathname}${url.search} app=${req.headers["x-ovh-application"] ?? "-"} signed=${signed}`,
      );
      const p = url.pathname.replace(/^\/1\.0/, "");
      if (p === "/auth/time") return reply(res, 200, Math.floor(Date.now() / 1000));
      if (!signed) return reply(res, 403, { message: "This call has not been granted" });
      if (p === "/domain/zone/" || p === "/domain/zone") return reply(res, 200, zones);
      const m = /^\/domain\/zone\/([^/]+)(\/.*)?$/.exec(p);
      if (!m || !zones.includes(m[1])) return reply(res, 404, { message: "This service does not exist" });
      const [zone, rest = ""] = [m[1], m[2]];
      if (rest === "/status") return reply(res, 200, { isDeployed: true, warnings: [], errors: [] });
      if (rest === "/refresh" && req.method === "POST") return reply(res, 200, null);
      if (rest === "/record" && req.method === "POST") {
        const data = JSON.parse(body) as {
          fieldType: string;
          subDomain: string;
          target: string;
          ttl?: number;
        };
        const r = { id: nextId++, zone, ttl: data.ttl ?? 60, ...data };
        records.push(r);
        return reply(res, 200, r);
      }
      if (rest === "/record" && req.method === "GET") {
        const type = url.searchParams.get("fieldType");
        const sub = url.searchParams.get("subDomain");
        const ids = records
          .filter(
            (r) =>
              r.zone === zone && (!type || r.fieldType === type) && (sub === null || r.subDomain === sub),
          )
          .map((r) => r.id);
        return reply(res, 200, ids);
      }
      const rec = /^\/record\/(\d+)$/.exec(rest);
      const found = rec && records.find((r) => r.zone === zone && r.id === Number(rec[1]));
      if (found && req.method === "GET") return reply(res, 200, found);
      if (found && req.method === "DELETE") {
        records.splice(records.indexOf(found), 1);
        return reply(res, 200, null);
      }
      return reply(res, 404, { message: `no such call: ${req.method} ${p}` });
    });
  },
);
api.listen(443, values.address);

// OVH's name servers for those zones: SOA and NS at each apex (this host, by its API name), and
// the TXT records written above. Enough for Pebble's dns-01 lookup and lego's propagation check.
const { Packet } = dns2;
const nameServer = values.ns!;
const dnsServer = dns2.createServer({
  udp: true,
  handle: (request, send) => {
    const response = Packet.createResponseFromRequest(request);
    const answer = (name: string, type: number, data: object) =>
      response.answers.push(Object.assign(new Packet.Resource(name, type, Packet.CLASS.IN, 1), data));
    for (const q of request.questions) {
      const name = q.name.toLowerCase().replace(/\.$/, "");
      const zone = zones.find((z) => name === z || name.endsWith(`.${z}`));
      if (zone && q.type === Packet.TYPE.SOA)
        answer(zone, Packet.TYPE.SOA, {
          primary: nameServer,
          admin: `hostmaster.${zone}`,
          serial: 1,
          refresh: 3600,
          retry: 600,
          expiration: 86400,
          minimum: 1,
        });
      if (zone && q.type === Packet.TYPE.NS && name === zone)
        answer(zone, Packet.TYPE.NS, { ns: nameServer });
      for (const r of records) {
        const fqdn = r.subDomain ? `${r.subDomain}.${r.zone}` : r.zone;
        if (r.fieldType === "TXT" && fqdn === name && q.type === Packet.TYPE.TXT)
          answer(q.name, Packet.TYPE.TXT, { data: r.target });
      }
      log(`DNS ${name} type=${q.type} answers=${response.answers.length}`);
    }
    send(response);
  },
});
void dnsServer.listen({ udp: { port: 53, address: values.address } });
log(`listening on ${values.address}:443 and :53 for ${zones.join(", ")}`);
