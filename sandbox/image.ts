// The node images of the sandbox: a Debian root filesystem per release, built with mmdebstrap from
// what OVH's cloud image brings plus the packages the rendered user-data installs, so a package a
// release lacks fails here. Cached by that list's hash; nodes boot from an overlay on top of it.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { KnownImage } from "../src/config/images";
import { shellQuote as q } from "../src/deploy/shell-text";
import { must, sh } from "./shell";

/** Where built root filesystems are kept between runs (one directory per release and package list). */
export const IMAGE_CACHE = "/var/cache/header-rewrite/images";

/**
 * What an OVH Debian cloud image has before user-data runs: systemd with networkd and resolved
 * (src/config/images.ts), netplan, cloud-init, sshd and sudo for the `debian` user.
 */
export const CLOUD_IMAGE_BASE = [
  "systemd",
  "systemd-sysv",
  "systemd-resolved",
  "udev",
  "dbus",
  "cloud-init",
  "netplan.io",
  "iproute2",
  "openssh-server",
  "sudo",
  "ca-certificates",
  // cloud-init's locale module runs update-locale, which fails without it (bookworm's 22.4).
  "locales",
];

const MIRROR = "http://deb.debian.org/debian";

// cloud-init installs the user-data's packages after its debconf_selections; the image build
// installs them up front, so the same answer is given before they are unpacked. Debian's cloud
// images carry the en_US.UTF-8 locale that cloud-init's locale module sets.
const DEBCONF = [
  "postfix postfix/main_mailer_type select No configuration",
  "locales locales/locales_to_be_generated multiselect en_US.UTF-8 UTF-8",
  "locales locales/default_environment_locale select C.UTF-8",
].join("\n");

/** The rootfs of IMAGE with PACKAGES (the user-data's list) installed; built unless cached. */
export function imageRootfs(image: KnownImage, packages: string[], log: (m: string) => void): string {
  const all = [...new Set([...CLOUD_IMAGE_BASE, ...packages])].sort();
  const hash = crypto
    .createHash("sha256")
    .update(JSON.stringify({ suite: image.suite, all, DEBCONF, MIRROR }))
    .digest("hex")
    .slice(0, 12);
  const dir = path.join(IMAGE_CACHE, `${image.suite}-${hash}`);
  if (fs.existsSync(path.join(dir, "etc", "os-release"))) return dir;
  fs.mkdirSync(IMAGE_CACHE, { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  log(`building the ${image.name} node image (${image.suite}, ${all.length} packages) with mmdebstrap`);
  const hook = `printf '%s\\n' ${q(DEBCONF)} | chroot "$1" debconf-set-selections`;
  const r = sh(
    `mmdebstrap --quiet --mode=root --variant=apt --include=${q(all.join(","))} ` +
      `--essential-hook=${q(hook)} ${q(image.suite)} ${q(tmp)} ${q(MIRROR)}`,
    undefined,
    1_200_000,
  );
  if (r.status !== 0) {
    fs.rmSync(tmp, { recursive: true, force: true });
    must(r, `mmdebstrap ${image.suite} with ${all.join(" ")} (a package missing in ${image.name}?)`);
  }
  fs.renameSync(tmp, dir);
  return dir;
}
