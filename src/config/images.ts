// The OVH images header-rewrite knows how to configure, and what each one is underneath.
//
// Network: OVH's guide "Configuring IPv6 on a Public Cloud instance" (ovh/docs,
// pages/public_cloud/public_cloud_network_services/configuration-02-how-to-configure-ipv6, 2024)
// puts "Debian (excluding Debian 12)" on ifupdown (/etc/network/interfaces.d) and "Ubuntu and
// Debian 12" on netplan (/etc/netplan), i.e. systemd-networkd underneath; Debian's cloud images
// also enable systemd-resolved from bookworm on (debian-cloud-images,
// config_space/bookworm/scripts/SYSTEM_BOOT/20-enable-systemd-resolved). Debian 13 continues that
// line. A node's network is therefore a systemd-networkd file matched on the port's MAC address:
// netplan is only a generator for networkd, and netplan >= 1.0 turns `match: macaddress` into
// PermanentMACAddress= (seen with trixie's netplan 1.1.2), which a NIC without a permanent address
// (a veth in the sandbox) never matches; networkd's MACAddress= matches the address the port gave.

export interface KnownImage {
  /** OpenStack image name as OVH lists it. */
  name: string;
  /** /etc/os-release ID and VERSION_ID the booted server must report. */
  osId: "debian";
  versionId: string;
  /** Debian suite: the sandbox builds its node root filesystem from it. */
  suite: string;
  /**
   * Whether the release packages certbot's OVH DNS plugin (python3-certbot-dns-ovh), which dns-01
   * and tenant certificates use. Debian 13 does not: neither it nor python3-lexicon is in trixie's
   * archive (dists/trixie/main Packages index, read 2026-11-24; the sandbox's image build for
   * trixie failed on it). There, tenant certificates are obtained with Debian's lego (4.9.1 in
   * both releases, OVH provider built in).
   */
  certbotOvhPlugin: boolean;
}

export const KNOWN_IMAGES: readonly KnownImage[] = [
  { name: "Debian 12", osId: "debian", versionId: "12", suite: "bookworm", certbotOvhPlugin: true },
  { name: "Debian 13", osId: "debian", versionId: "13", suite: "trixie", certbotOvhPlugin: false },
];

/** Whether nodes of this image obtain tenant certificates with lego (no certbot OVH plugin there). */
export function tenantCertsViaLego(imageName: string): boolean {
  return !knownImage(imageName).certbotOvhPlugin;
}

export function knownImage(name: string): KnownImage {
  const image = KNOWN_IMAGES.find((i) => i.name === name);
  if (!image) {
    throw new Error(
      `image "${name}" is not one header-rewrite knows how to configure ` +
        `(${KNOWN_IMAGES.map((i) => i.name).join(", ")})`,
    );
  }
  return image;
}
