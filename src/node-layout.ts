// Where things live on a relay node. Every stage, the sandbox and the tests import these; no path
// is spelled twice.

/**
 * How remote.Command reaches a node: a failed connection is dialled again, up to this many times
 * (a server still booting, sshd reloaded by cloud-init); the sandbox dials the same way.
 */
export const SSH_DIAL = { dialErrorLimit: 60, perDialTimeout: 15 };

/** How every deploy step runs on a node: the script arrives on stdin (remote.Command and the sandbox). */
export const RUN_AS_ROOT = "sudo bash -s";

/** The live Postfix configuration: a symlink to one directory under POSTFIX_RELEASES. */
export const POSTFIX_LIVE = "/etc/postfix";
export const POSTFIX_RELEASES = "/etc/postfix.releases";
/** How many releases the deploy keeps for inspection and rollback (besides the package original). */
export const RELEASES_KEPT = 5;
/** Written into each release: "<fqdn> <bundle hash>". */
export const RELEASE_MARKER = "header-rewrite.release";
/** Written into each release: the release that was live before it, where a failed check returns to. */
export const RELEASE_PREVIOUS = "header-rewrite.previous";
/** Written into each release: how its verify step reaches each tenant next hop (one line each). */
export const RELEASE_PROBES = "header-rewrite.probes";
/** "pending" in a staged release; "master <pid>" once Postfix loaded it (node/lib/postfix-release.sh). */
export const RELEASE_LOADED = "header-rewrite.loaded";
/** Written into a release that passed its post-deploy check (the verify step): its bundle hash. */
export const RELEASE_CHECKED = "header-rewrite.checked";

/** The CA bundle that verifies tenant next hops (Debian's ca-certificates): Postfix and the checks. */
export const TENANT_CA_FILE = "/etc/ssl/certs/ca-certificates.crt";

/** The Prometheus exporters on every node (Debian's packages and their default ports). */
export const EXPORTERS = {
  node: { name: "prometheus-node-exporter", port: 9100 },
  postfix: { name: "prometheus-postfix-exporter", port: 9154 },
};
/** Where node-exporter's textfile collector reads header-rewrite's own metrics (Debian's default). */
export const METRICS_TEXTFILE = "/var/lib/prometheus/node-exporter/header-rewrite.prom";
/** Postfix logs here on every node (maillog_file): the status collector and the exporter read it. */
export const POSTFIX_LOG = "/var/log/postfix.log";
/** The status collector as the metrics timer runs it, and the facts it checks. */
export const METRICS_COLLECTOR = {
  program: "/usr/local/lib/header-rewrite/relay-status.py",
  spec: "/etc/header-rewrite/status.json",
  service: "header-rewrite-metrics",
};

/** Rotates Postfix's log daily (node/sbin/header-rewrite-postfix-logrotate). */
export const POSTFIX_LOG_ROTATE = "/usr/local/sbin/header-rewrite-postfix-logrotate";
/** Where the steps install systemd units (node/systemd/). */
export const SYSTEMD_UNIT_DIR = "/etc/systemd/system";

/** Present on a node being removed: its drain lets the server go with mail still queued. */
export const DRAIN_FORCE = "/etc/header-rewrite/drain-force";

/** What a node runs, as files in the repository (src/render/node-render.ts reads them into the bundle). */
export const NODE_DIR = "node";

/** Operator-supplied client certificates, one PEM (key + chain) per tenant, root-only. */
export const CLIENT_CERT_DIR = "/etc/header-rewrite/client-certs";

export function clientCertPath(tenantId: string): string {
  return `${CLIENT_CERT_DIR}/${tenantId}.pem`;
}

/** Where certbot keeps the node certificate; Postfix reads the key first, then the full chain. */
export function tlsPaths(fqdn: string): {
  dir: string;
  keyFile: string;
  certFile: string;
  chainFile: string;
} {
  const dir = `/etc/letsencrypt/live/${fqdn}`;
  return {
    dir,
    keyFile: `${dir}/privkey.pem`,
    certFile: `${dir}/cert.pem`,
    chainFile: `${dir}/fullchain.pem`,
  };
}

/** certbot's name for the client certificate a node obtains for one tenant (tenantCertificates). */
export function tenantCertName(tenantId: string): string {
  return `tenant-${tenantId}`;
}

/** Where lego keeps its account and certificates (releases without certbot's OVH plugin). */
export const LEGO_PATH = "/etc/header-rewrite/lego";
/** The OVH API credentials lego reads from its environment (root-only). */
export const LEGO_OVH_ENV = `${LEGO_PATH}/ovh.env`;
/** What lego's renewal reads (root-only): the ACME account, names and hook (node/sbin/header-rewrite-lego-renew). */
export const LEGO_SETTINGS = `${LEGO_PATH}/settings`;
/** Renews lego's certificates daily (systemd timer) and reloads Postfix after a renewal. */
export const LEGO_RENEW = "/usr/local/sbin/header-rewrite-lego-renew";

/**
 * That certificate as Postfix presents it to the tenant: key first, then the full chain; certbot's
 * layout, or lego's (`<name>.key`, `<name>.crt` with the chain).
 */
export function tenantCertChainFiles(tenantId: string, name: string, viaLego: boolean): string {
  if (viaLego) return `${LEGO_PATH}/certificates/${name}.key,${LEGO_PATH}/certificates/${name}.crt`;
  const certbot = tlsPaths(tenantCertName(tenantId));
  return `${certbot.keyFile},${certbot.chainFile}`;
}

/** certbot runs this after every renewal: Postfix reloads and serves the new certificate. */
export const CERTBOT_DEPLOY_HOOK = "/etc/letsencrypt/renewal-hooks/deploy/50-header-rewrite-postfix";

/** OVH API credentials for the dns-01 challenge (root-only). */
export const ACME_DNS_CREDENTIALS = "/etc/letsencrypt/ovh.ini";

/** Postfix's queue manager PID file: unchanged across `postfix reload`. */
export const POSTFIX_MASTER_PID = "/var/spool/postfix/pid/master.pid";

/**
 * The tenant-pinning milter. Port 25 hands it each message before anything is rewritten; it reads
 * its policy from the live release, so a redeploy changes pins with Postfix's own switch.
 */
export const PIN_MILTER = {
  program: "/usr/local/lib/header-rewrite/tenant-pin-milter.py",
  /** Imported by the program (next to it): rewrites meeting addresses once a message passed. */
  calendarModule: "/usr/local/lib/header-rewrite/calendar_rewrite.py",
  service: "header-rewrite-pin",
  /** Its own system user and group (node/lib/pin-user.sh); the unit runs it as this user. */
  user: "header-rewrite-pin",
  /** A UNIX socket inside Postfix's queue directory (smtpd is chrooted there): no TCP, no port. */
  socketDir: "/var/spool/postfix/header-rewrite",
  socket: "/var/spool/postfix/header-rewrite/pin.sock",
  /** How smtpd names it: relative to the queue directory, so it works chrooted or not. */
  postfixSocket: "unix:header-rewrite/pin.sock",
  policy: `${POSTFIX_LIVE}/tenant_pins.json`,
  /** maps/translate_domains and maps/calendar_addresses for the calendar rewrite. */
  calendarPolicy: `${POSTFIX_LIVE}/calendar_addresses.json`,
  /** Where it logs and keeps its PID when the node has no systemd (systemd keeps both itself). */
  log: "/var/log/header-rewrite-pin.log",
  pidFile: "/run/header-rewrite-pin.pid",
  /** The value tenant A's transport rule sets in a pin's secret-header (root:<user> 0640). */
  secretFile: "/etc/header-rewrite/pin-secret",
};

/** Second pass: an smtpd on loopback whose cleanup rewrites mail that passed the pin check. */
export const REWRITE_PASS = { host: "127.0.0.1", port: 10026 };
