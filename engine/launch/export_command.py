"""``tuner export RUN_DIR [--checkpoint STEP] --to mlx|gguf|ollama|lmstudio [--quant Q] OUT``.

Split from :mod:`engine.cli`, which parses the command line and is the one boundary for errors:
a run that cannot be exported is one line and exit code 2 (:func:`engine.export.export_run`
checks everything before any work). Progress is printed as lines, at most one per tenth of the
way, so a log stays short.
"""

from __future__ import annotations

from pathlib import Path

from engine.export import GGUF_QUANTS, MLX_QUANTS, TARGETS

NEXT_STEP = {
    "mlx": "load it with model: {out}, or mlx_lm.generate --model {out}",
    "gguf": "run it with llama.cpp: llama-cli -m {out}",
    "ollama": "make it an Ollama model: ollama create NAME -f {out}/Modelfile",
    "lmstudio": "point LM Studio's models folder at {out}, or move {out}/tuner into ~/.lmstudio/models",
}


def add_export_parser(sub) -> None:
    """The ``export`` subcommand on the ``tuner`` parser's subparsers."""
    export = sub.add_parser("export", help="export a run's model: a fused mlx folder, a GGUF file, an Ollama "
                            "folder or LM Studio's layout")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("out", metavar="OUT", help="the file or folder to write; it must not exist yet")
    export.add_argument("--to", required=True, choices=TARGETS, help="what to write")
    export.add_argument("--checkpoint", type=int, metavar="STEP",
                        help="a saved checkpoint's step (default: the run's final adapter)")
    export.add_argument("--quant", choices=GGUF_QUANTS + MLX_QUANTS,
                        help="GGUF tensor types: f16 (default), q8_0 or f32; for --to mlx: dequantize")


def cmd_export(args) -> int:
    """Export and print where it went; UserErrors reach the CLI's boundary as one line."""
    from engine.export import export_run

    printed = [-1]

    def progress(what: str, fraction: float) -> None:
        tenth = int(fraction * 10)
        if tenth > printed[0]:
            printed[0] = tenth
            print(f"{fraction:4.0%}  {what}", flush=True)

    out = export_run(Path(args.run_dir), args.to, Path(args.out), checkpoint=args.checkpoint,
                     quant=args.quant, progress=progress)
    print(f"exported {args.run_dir} -> {out}")
    print(NEXT_STEP[args.to].format(out=out))
    return 0
