"""``nlbench predict RUN IMAGES... | --folder DIR``: a stored model's class probabilities per image, as CSV."""

from __future__ import annotations

from typing import Optional

import typer

from nlbench.cli.common import ConfigOption, OverwriteOption, RunsDirOption

#: The first bytes of every CSV this command writes (an existing --out file starting so may be replaced).
HEADER_START = "path,predicted,"


def predict(
    run: str = typer.Argument(..., help="A run folder, or a run id (or its first characters) in the store."),
    images: Optional[list[str]] = typer.Argument(None, help="Image files (jpg, png, bmp, webp, tif, ...)."),
    folder: Optional[str] = typer.Option(
        None, "--folder", help="Also every image file under this folder (recursively; hidden files ignored)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="CSV file to write (default: stdout)."),
    overwrite: OverwriteOption = False,
    device: str = typer.Option("auto", "--device", help="auto (default: CUDA if present), cpu or cuda."),
    runs: RunsDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Write the class probabilities of a finished run's model for image files, one CSV row per image.

    Columns: path, predicted (the most probable class), then one probability per class of the model.
    Images get the run's test-time preprocessing. A file that is not a readable image stops the
    command with an error naming it, before anything is written.
    """
    import csv
    import io
    import sys
    from pathlib import Path

    from nlbench.cli.common import load, output_file, starts_with
    from nlbench.cli.show import locate_run
    from nlbench.errors import UsageError
    from nlbench.progress import stderr_console
    from nlbench.train.assemble import resolve_device
    from nlbench.train.transfer import image_files, load_model, predict_files

    paths = [Path(p).expanduser() for p in images or []]
    for path in paths:
        if path.is_dir():
            raise UsageError(f"{path} is a folder; give it with --folder DIR to read every image in it.")
        if not path.is_file():
            raise UsageError(f"image file {path} does not exist.")
    log = stderr_console()
    if folder is not None:
        where = Path(folder).expanduser()
        if not where.is_dir():
            raise UsageError(f"--folder {where} is not a folder; give a folder of images.")
        found, other = image_files(where)
        if not found:
            raise UsageError(f"--folder {where} holds no image files (jpg, jpeg, png, bmp, webp, tif, tiff).")
        if other:
            log.print(f"note: {other} file(s) under {where} are not images by their extension and were left out.",
                      markup=False)
        paths += found
    if not paths:
        raise UsageError("give image files, or --folder DIR, to predict.")
    target = output_file(out, starts_with(HEADER_START.encode()), overwrite) if out is not None else None
    cfg, registry = load(config, report=True)
    model = load_model(locate_run(run, runs, cfg), registry, resolve_device(device))
    log.print(f"predicting {len(paths):,} image(s) with run {model.run_id} ({model.spec.method} on "
              f"{model.spec.data.name}), device {model.device}", markup=False)
    probabilities = predict_files(model, paths)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "predicted", *model.class_names])
    best = probabilities.argmax(dim=1).tolist()
    for path, row, top in zip(paths, probabilities.tolist(), best):
        writer.writerow([str(path), model.class_names[top], *(f"{p:.6f}" for p in row)])
    if target is None:
        sys.stdout.write(text.getvalue())
        return
    from nlbench.fileio import atomic_write_bytes

    atomic_write_bytes(target, text.getvalue().encode())
    log.print(f"wrote {len(paths):,} row(s) to {target}", markup=False)
