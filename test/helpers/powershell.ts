// Reads generated PowerShell with a real PowerShell grammar (tree-sitter-powershell, run as
// WebAssembly by web-tree-sitter) and checks every command against the committed cmdlet schema.
import * as fs from "node:fs";
import * as path from "node:path";
import { Language, type Node, Parser } from "web-tree-sitter";
import { BUILTIN_CMDLETS, COMMON_PARAMETERS, type CmdletSchema } from "../../src/m365/cmdlet-schema";
import { PROJECT_ROOT } from "../../src/project";

let parser: Parser | undefined;

export async function powershellParser(): Promise<Parser> {
  if (!parser) {
    await Parser.init();
    const wasm = path.join(
      PROJECT_ROOT,
      "node_modules",
      "tree-sitter-powershell",
      "tree-sitter-powershell.wasm",
    );
    const language = await Language.load(wasm);
    parser = new Parser();
    parser.setLanguage(language);
  }
  return parser;
}

export interface PsCommand {
  name: string;
  line: number;
  /** Each parameter with the literal values of its argument (strings decoded, bare words as written). */
  params: { name: string; values: string[] }[];
}

export interface PsScript {
  /** Syntax errors and missing tokens, with their line. */
  errors: string[];
  commands: PsCommand[];
  functions: string[];
}

function all(n: Node, type: string): Node[] {
  return n.descendantsOfType(type).filter((x): x is Node => x !== null);
}

/** A single-quoted literal's value: quotes removed, doubled quotes (also typographic ones) undone. */
function verbatim(text: string): string {
  return text.slice(1, -1).replace(/(['\u2018\u2019\u201a\u201b])\1/g, "$1");
}

function literals(arg: Node): string[] {
  if (arg.type === "generic_token") return [arg.text];
  const strings = all(arg, "verbatim_string_characters").map((s) => verbatim(s.text));
  const variables = all(arg, "variable").map((v) => v.text);
  return [...strings, ...variables];
}

export async function parsePowershell(text: string): Promise<PsScript> {
  const tree = (await powershellParser()).parse(text)!;
  const errors: string[] = [];
  const visit = (n: Node) => {
    if (n.isError || n.isMissing)
      errors.push(
        `line ${n.startPosition.row + 1}: ${n.isMissing ? "missing" : "cannot parse"} ${JSON.stringify(n.text.slice(0, 40))}`,
      );
    for (const c of n.children) if (c) visit(c);
  };
  visit(tree.rootNode);
  const commands = all(tree.rootNode, "command").map((c) => {
    const name = c.childForFieldName("command_name")?.text ?? c.namedChildren[0]?.text ?? "";
    const elements = (c.childForFieldName("command_elements")?.namedChildren ?? []).filter(
      (e): e is Node => !!e && e.type !== "command_argument_sep",
    );
    const params: PsCommand["params"] = [];
    elements.forEach((e, i) => {
      if (e.type !== "command_parameter") return;
      const next = elements[i + 1];
      const values = next && next.type !== "command_parameter" ? literals(next) : [];
      params.push({ name: e.text.replace(/^-/, "").replace(/:$/, ""), values });
    });
    return { name, line: c.startPosition.row + 1, params };
  });
  const functions = all(tree.rootNode, "function_name").map((f) => f.text);
  return { errors, commands, functions };
}

export function exchangeSchema(): Record<string, CmdletSchema> {
  const file = path.join(PROJECT_ROOT, "m365", "cmdlets.json");
  return (JSON.parse(fs.readFileSync(file, "utf8")) as { cmdlets: Record<string, CmdletSchema> }).cmdlets;
}

/** Every way the script's commands disagree with the schema: unknown cmdlet, parameter or value. */
export function schemaProblems(script: PsScript, schema: Record<string, CmdletSchema>): string[] {
  const known: Record<string, CmdletSchema> = { ...schema, ...BUILTIN_CMDLETS };
  const problems: string[] = [];
  for (const c of script.commands) {
    if (script.functions.includes(c.name)) continue;
    const cmdlet = known[c.name];
    if (!cmdlet) {
      problems.push(`line ${c.line}: ${c.name} is not in the cmdlet schema`);
      continue;
    }
    for (const p of c.params) {
      const param = cmdlet.parameters[p.name];
      if (!param) {
        if (!COMMON_PARAMETERS.names.includes(p.name))
          problems.push(`line ${c.line}: ${c.name} has no parameter -${p.name} (${cmdlet.source})`);
        continue;
      }
      for (const v of p.values)
        if (param.values && !param.values.includes(v))
          problems.push(
            `line ${c.line}: ${c.name} -${p.name} '${v}' is not one of ${param.values.join(", ")}`,
          );
    }
  }
  return problems;
}
