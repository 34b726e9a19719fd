// Which cmdlets the generated Microsoft 365 scripts may call, and with which parameters: Exchange
// Online cmdlets from m365/cmdlets.json (taken from Microsoft's cmdlet reference), the few
// PowerShell built-ins the scripts use, and PowerShell's common parameters.

export interface CmdletSchema {
  /** learn.microsoft.com page the entry was taken from. */
  source: string;
  parameters: Record<string, { type: string; values?: string[] }>;
}

/** The Exchange Online cmdlets the generator uses; m365/cmdlets.json holds exactly these. */
export const EXCHANGE_CMDLETS = [
  "Get-OutboundConnector",
  "New-OutboundConnector",
  "Set-OutboundConnector",
  "Get-TransportRule",
  "New-TransportRule",
  "Set-TransportRule",
  "Get-InboundConnector",
  "New-InboundConnector",
  "Set-InboundConnector",
  "Get-AcceptedDomain",
  "Get-OrganizationConfig",
  "Get-DkimSigningConfig",
  "Get-MailUser",
  "New-MailUser",
  "Set-MailUser",
] as const;

const CORE = "https://learn.microsoft.com/powershell/module/microsoft.powershell.core";
const UTILITY = "https://learn.microsoft.com/powershell/module/microsoft.powershell.utility";

/** PowerShell built-ins the scripts call, with the parameters they use (and their documentation). */
export const BUILTIN_CMDLETS: Record<string, CmdletSchema> = {
  "Set-StrictMode": { source: `${CORE}/set-strictmode`, parameters: { Version: { type: "Version" } } },
  "ForEach-Object": { source: `${CORE}/foreach-object`, parameters: {} },
  "Where-Object": { source: `${CORE}/where-object`, parameters: {} },
  "Sort-Object": { source: `${UTILITY}/sort-object`, parameters: {} },
  "Write-Output": { source: `${UTILITY}/write-output`, parameters: {} },
  "Write-Error": { source: `${UTILITY}/write-error`, parameters: {} },
  "ConvertTo-SecureString": {
    source:
      "https://learn.microsoft.com/powershell/module/microsoft.powershell.security/convertto-securestring",
    parameters: {
      String: { type: "String" },
      AsPlainText: { type: "SwitchParameter" },
      Force: { type: "SwitchParameter" },
    },
  },
};

/** about_CommonParameters: accepted by every cmdlet. */
export const COMMON_PARAMETERS = {
  source:
    "https://learn.microsoft.com/powershell/module/microsoft.powershell.core/about/about_commonparameters",
  names: ["ErrorAction", "WarningAction", "Verbose", "Debug", "ErrorVariable", "WhatIf", "Confirm"],
};
