// The secrets' shape, checked before any resource is registered (their values are never printed):
// the same checks the deploy steps rely on, moved ahead of the cloud so a mistake costs nothing.
import { checkClientCertificates } from "./client-certificates";
import {
  ConfigError,
  DNS_CREDENTIALS_REQUIRED,
  PROJECT,
  type StackConfig,
  needsDnsCredentials,
} from "./stack-config";
import type { RelayMaps } from "../maps/relay-maps";
import { checkPinSecret } from "../maps/tenant-pins";

/** The items of a "…:\n  - a\n  - b" report, or the message itself. */
function listed(message: string): string[] {
  const items = message
    .split("\n")
    .filter((l) => l.startsWith("  - "))
    .map((l) => l.slice(4));
  return items.length ? items : [message];
}

const DNS_FIELDS = ["endpoint", "applicationKey", "applicationSecret", "consumerKey"] as const;

function parsed(key: string, text: string | undefined, problems: string[]): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    problems.push(
      `${PROJECT}:${key} is not JSON (hint: docs/configuration.md "Configuration" shows its shape)`,
    );
    return null;
  }
}

/**
 * Checks the secrets of the stack's configuration (all of it, as `pulumi.runtime.allConfig()` hands
 * it over): client certificates, the dns-01 credentials where a challenge or a tenant certificate
 * needs them, the pin secret. Throws one ConfigError listing every problem; returns the tenants
 * with an operator-supplied client certificate.
 */
export function checkSecrets(
  cfg: StackConfig,
  maps: RelayMaps,
  all: Record<string, string>,
  source: string,
): string[] {
  const problems: string[] = [];
  let supplied: string[] = [];
  const certs = parsed("clientCertificates", all[`${PROJECT}:clientCertificates`], problems);
  if (certs !== undefined && certs !== null) {
    const entries = typeof certs === "object" && !Array.isArray(certs) ? Object.entries(certs) : [];
    if (!entries.length || entries.some(([, v]) => typeof v !== "string"))
      problems.push(
        `${PROJECT}:clientCertificates must be an object of tenant id -> PEM bundle ` +
          '(hint: pulumi config set --secret --path "header-rewrite:clientCertificates.<tenant>" < bundle.pem)',
      );
    else {
      supplied = entries.map(([id]) => id);
      try {
        checkClientCertificates(
          Object.fromEntries(entries) as Record<string, string>,
          maps,
          cfg.tenantCertificates,
        );
      } catch (e) {
        problems.push(...listed((e as Error).message));
      }
    }
  }
  const dns = parsed("acmeDnsOvhCredentials", all[`${PROJECT}:acmeDnsOvhCredentials`], problems);
  if (dns === undefined && needsDnsCredentials(cfg)) problems.push(DNS_CREDENTIALS_REQUIRED);
  if (dns !== undefined && dns !== null) {
    const d = dns as Record<string, unknown>;
    const missing = DNS_FIELDS.filter((f) => typeof d?.[f] !== "string" || !(d[f] as string).length);
    if (missing.length)
      problems.push(
        `${PROJECT}:acmeDnsOvhCredentials lacks ${missing.join(", ")} (hint: {${DNS_FIELDS.join(", ")}})`,
      );
  }
  try {
    checkPinSecret(all[`${PROJECT}:pinSecret`], maps.pins);
  } catch (e) {
    problems.push((e as Error).message);
  }
  if (problems.length) throw new ConfigError(source, problems);
  return supplied;
}
