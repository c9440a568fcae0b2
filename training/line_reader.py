"""Train the line reader: a small CNN that reads a whole line of written digits (CTC), for /read's cut choice.

    python -m training line_reader --out runs/line_reader_base.onnx     # 6,000 steps, about 35 min on 2 cores
    python -m training line_reader --init runs/line_reader_base.onnx --steps 5000 --lr 5e-4 --augment 0.5 --seed 2

The shipped reader (models/line_reader.json lists both commands) is the first run trained on by the second, on
lines half of whose digits are distorted (`--init`: from an exported reader, whose batch norms the export folded
into its convolutions, so that it trains on without them): of touching numbers read by /read, drawn as `make
bench-read` draws them, 845 -> 851 of 900 judging numbers (validation digits from 1,600 and 3,200, training digits
from 30,000) and 548 -> 553 of 600 held out (validation digits from 0, test digits from 2,000 and 3,500); read by
the line reader alone, 529 -> 544 of the 600.

Lines are made on the fly from MNIST *training* digits 0-30,000 (`--train-digits`; accuracy/tune_read.py judges on
digits from 30,000, `make bench-read` reads test digits): 1-12 digits side by side, touching or overlapping by up to
5 px at 28-px scale in three lines of five, else spaced 1-14 px, each digit a few pixels up or down (`--vary-size`:
and 0.8-1.1 times as tall and as wide; `--augment`: rotated, slanted and wobbled; `--narrow`: 0.7-1.0 times as
wide), some strokes thickened. Each line goes through
service/line_reader.py's `line_image`, as the service's ink does. Validation: whole-line accuracy (greedy decoding)
on lines of the validation digits, touching and spaced apart. The model and a card (models/line_reader.json: its
command, validation figures, sha256) are written at the end, once the file computes what the network does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from service.line_reader import BLANK, greedy_text, line_image
from training.augment import random_affine
from training.data import load_split

TRAIN_DIGITS = 30_000  # the first this many training digits; tune_read judges on later ones


class LineNet(nn.Module):
    """[N, 1, 32, W] -> per-frame class scores [N, W / 2, 11] (0-9 and the CTC blank); `wider`: residual dilated
    convolutions (dilation 2, 4, ...) before the last layer, each frame then seeing further along the line."""

    def __init__(self, wider: int = 0) -> None:
        super().__init__()

        def block(into: int, out: int, pool: tuple[int, int]) -> list[nn.Module]:
            return [nn.Conv2d(into, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(pool)]

        self.features = nn.Sequential(
            *block(1, 32, (2, 2)), *block(32, 48, (2, 1)), *block(48, 64, (2, 1)), *block(64, 64, (2, 1))
        )
        self.context = nn.Sequential(
            nn.Conv1d(128, 128, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(128, 128, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(128, BLANK + 1, 1),
        )
        self.wider = nn.ModuleList(nn.Conv1d(128, 128, 5, padding=2 * 2**n, dilation=2**n) for n in range(1, wider + 1))
        for conv in self.wider:  # zero: each block starts as the identity, the network as it was
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)  # [N, 64, 2, T]
        h = self.context[:4](f.reshape(f.shape[0], f.shape[1] * f.shape[2], f.shape[3]))
        for conv in self.wider:
            h = torch.relu(h + conv(h))  # h >= 0 already: with a zero conv, h again
        return self.context[4](h).transpose(1, 2)


def from_exported(path: Path, wider: int = 0) -> LineNet:
    """A LineNet holding an exported line reader's weights, to train on: the export folded each batch norm into the
    convolution before it, so the norms become identities (and the network trains without them). It has the
    file's wider blocks, or `wider` if more: those the file lacks start as identities."""
    import onnx
    from onnx import numpy_helper

    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in onnx.load(path).graph.initializer}
    model = LineNet(max(wider, sum(name.startswith("wider.") and name.endswith(".weight") for name in weights)))
    for n, layer in enumerate(model.features):
        if isinstance(layer, nn.BatchNorm2d):
            model.features[n] = nn.Identity()
    state = model.state_dict()
    model.load_state_dict(
        {
            name: weights.get(name, value) if name.startswith("wider.") else weights[name]
            for name, value in state.items()
        }
    )
    return model


def earlier_commands(init: str | None) -> list[str]:
    """The commands that made the line reader `init` (its card's "reproduce"), to run before this one's."""
    if not init:
        return []
    made = json.loads(Path(init).with_suffix(".json").read_text())["reproduce"]
    return [made] if isinstance(made, str) else made


def thicken(strip: np.ndarray) -> np.ndarray:
    """Each pixel the brightest of the 2x2 block it starts (a 2x2 grey dilation, the edges repeated)."""
    p = np.pad(strip, ((0, 1), (0, 1)), mode="edge")
    return np.maximum.reduce([p[:-1, :-1], p[1:, :-1], p[:-1, 1:], p[1:, 1:]])


def distorted(digits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Digits (uint8 [N, 28, 28]) each rotated, scaled, slanted and wobbled a little at random (training/augment.py's
    `random_affine`): other writers' hands than the training digits'."""
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    x = torch.from_numpy(digits.astype(np.float32) / 255.0)[:, None]
    x = random_affine(
        x, generator, max_rotation=10, max_scale=0.1, max_shift=0, max_shear=0.3, elastic=1.0, elastic_share=0.5
    )
    return (x[:, 0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def make_line(
    images: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    vary_size: float = 0.0,
    augment: float = 0.0,
    narrow: float = 0.0,
    ones: float = 0.0,
) -> tuple[np.ndarray, str]:
    """One line of digits from `images` as the model's input (float32 [32, W]) and its text; `vary_size`: the
    share of lines whose digits are each 0.8-1.1 times as tall and as wide; `augment`: the share whose digits are
    `distorted`; `narrow`: the share whose digits are each 0.7-1.0 times as wide (as tall); `ones`: the share in
    which each digit is a 1 one time in three (a 1 glued to a neighbour is the reader's commonest miss)."""
    draw = rng.random()  # one digit alone too: the reader must not see two in a wide digit
    length = 1 if draw < 0.1 else int(rng.integers(9, 13)) if draw < 0.25 else int(rng.integers(2, 9))
    index = rng.integers(0, len(images), length)
    if ones > 0 and rng.random() < ones:
        index = np.where(rng.random(length) < 1 / 3, rng.choice(np.flatnonzero(labels == 1), length), index)
    touching = rng.random() < 0.6
    vary = rng.random() < vary_size
    # Drawn only when asked for, so that lines without it are those the shipped model's card command made.
    distort = augment > 0 and rng.random() < augment
    squeeze = narrow > 0 and rng.random() < narrow
    digits = distorted(images[index], rng) if distort else images[index]
    parts = []
    for pixels in digits:
        columns = np.flatnonzero(pixels.max(axis=0) > 40)
        part = pixels[:, columns[0] : columns[-1] + 1] if len(columns) else pixels
        size = rng.uniform(0.8, 1.1, 2) if vary else np.ones(2)
        if squeeze:
            size[1] *= rng.uniform(0.7, 1.0)
        tall, wide = max(8, round(28 * size[0])), max(2, round(part.shape[1] * size[1]))
        part = np.asarray(Image.fromarray(part).resize((wide, tall), Image.Resampling.BILINEAR))
        parts.append(part)
    gaps = -rng.integers(0, 6, length) if touching else rng.integers(1, 15, length)
    width = sum(p.shape[1] for p in parts) + int(gaps[1:].sum()) + 16
    strip = np.zeros((40, max(width, 16)), np.int32)
    x = 8
    for n, part in enumerate(parts):
        x += int(gaps[n]) if n else 0
        y = 6 + int(rng.integers(-3, 4))
        y += 28 - part.shape[0]  # a short digit sits on the line
        strip[y : y + part.shape[0], x : x + part.shape[1]] += part
        x += part.shape[1]
    strip = np.clip(strip, 0, 255).astype(np.float32)
    if rng.random() < 0.2:
        strip = thicken(strip)
    return line_image(strip), "".join(map(str, labels[index]))


def batch(lines: list[tuple[np.ndarray, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lines -> images padded with blank columns to the widest, the targets concatenated, frames and lengths."""
    width = max(image.shape[1] for image, _ in lines)
    x = np.zeros((len(lines), 1, lines[0][0].shape[0], width), np.float32)
    for n, (image, _) in enumerate(lines):
        x[n, 0, :, : image.shape[1]] = image
    targets = torch.tensor([int(c) for _, text in lines for c in text])
    frames = torch.full((len(lines),), width // 2, dtype=torch.long)
    lengths = torch.tensor([len(text) for _, text in lines])
    return torch.from_numpy(x), targets, frames, lengths


def width_of(line: tuple[np.ndarray, str]) -> int:
    return line[0].shape[1]


def validate(model: LineNet, lines: list[tuple[np.ndarray, str]]) -> float:
    model.eval()
    right = 0
    with torch.no_grad():
        for start in range(0, len(lines), 64):
            chunk = lines[start : start + 64]
            scores = model(batch(chunk)[0]).numpy()
            for (image, text), frames in zip(chunk, scores, strict=True):
                right += greedy_text(frames[: image.shape[1] // 2]) == text
    model.train()
    return right / len(lines)


def export(model: LineNet, out: Path) -> None:
    model.eval()
    example = torch.zeros(1, 1, 32, 96)
    width = torch.export.Dim("width", min=4, max=4096)
    torch.onnx.export(
        model,
        (example,),
        str(out),
        input_names=["line"],
        output_names=["frames"],
        dynamic_shapes=({0: torch.export.Dim("batch"), 3: 2 * width},),
        external_data=False,
    )


def check_parity(model: LineNet, out: Path, lines: list[tuple[np.ndarray, str]]) -> float:
    """The largest difference between the exported file's scores and the network's on `lines`; SystemExit where
    it is over 1e-4 (the export changed what the model computes)."""
    import onnxruntime as ort

    x = batch(lines)[0]
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    difference = float(np.abs(session.run(None, {"line": x.numpy()})[0] - expected).max())
    if difference > 1e-4:
        raise SystemExit(f"{out} differs from the trained network by {difference:.2e} (over 1e-4)")
    return difference


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="models/line_reader.onnx")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR)")
    # Tried at 1.0 (7,000 steps): 89.4 % of validation lines drawn the same way, but of 141 touching numbers of
    # judging digits (training digits from 30,000, drawn as `make bench-read` draws them) it read 119 right, the
    # shipped model (0, 6,000 steps) 129.
    parser.add_argument("--vary-size", type=float, default=0.0, help="share of lines with digits of varied size")
    # Tried at 0.7 from scratch (8,000 steps, 62 min): 94.4 % of validation lines (the base run: 90.5 %), yet /read
    # with it read fewer touching numbers of test digits the benchmark does not use (from 2,000 and 3,500, 150
    # each: 131 and 129 right; the base run 132 and 134), and as many of validation digits (138 and 138; 136 and
    # 139). Training the base run on at 0.5 (the shipped reader, above) gains on all of them; at 0.3 for 2,500
    # steps (lr 5e-4), about half as much (847 of 900, 551 of 600).
    parser.add_argument("--augment", type=float, default=0.0, help="share of lines of distorted digits")
    # The line reader reads lines of test digits 0-5,000 (NIST's SD-3 writers: less ink, narrower digits; the
    # benchmark's) worse than any other: 85.3 % of 600 lines drawn as in training, against 94.8 % for 5,000-10,000
    # and 90.5 % for validation digits. Tried for it (6,000 steps each): all 55,000 training digits, 91.7 % of
    # validation lines and 86.7 % of lines of test digits 2,000-5,000 (the shipped model: 90.5 and 83.8 %), and
    # with --narrow 0.5, 91.8 and 85.3 %; yet /read with either read no more touching numbers: of validation digits
    # (300) 262 and 267, of test digits from 2,000 and 3,500 (150 each) 130 + 130 and 133 + 132 (shipped: 265,
    # 132 + 134). Not shipped.
    parser.add_argument("--narrow", type=float, default=0.0, help="share of lines of narrowed digits")
    # A dropped glued 1 is the shipped reader's commonest mistake. Tried at 0.3, trained on from the shipped reader
    # (3,500 steps, lr 3e-4, --augment 0.5): of touching numbers read by /read, 847 of the 900 judging numbers and
    # 556 of the 600 held out (the shipped reader: 851, 553); trained on the same way without it (6,000 steps), 844
    # and 555. No better: not shipped.
    parser.add_argument("--ones", type=float, default=0.0, help="share of lines with a 1 for every third digit")
    parser.add_argument(
        "--train-digits",
        type=int,
        default=TRAIN_DIGITS,
        help="the first this many training digits (beyond 30,000: tune_read's judging digits too)",
    )
    parser.add_argument("--init", help="an exported line reader (.onnx) to train on from, not from scratch")
    # Each frame of the shipped reader sees about a digit and a half of the line; three blocks (dilation 2, 4, 8)
    # make it about five. Tried at 3, trained on from the shipped reader (4,000 steps, lr 5e-4, --augment 0.5, seed
    # 5), then on again with --ones 0.3 (5,000 steps, lr 3e-4, seed 6): of touching numbers drawn as above (another
    # draw: the shipped reader 853 and 553), read by the line reader alone 835 -> 851 and 544 -> 557, by /read
    # 855 then 858 of 900, 556 then 557 of 600; of 1,260 numbers of validation digits written apart, +1 and 0. Yet
    # `make bench-read` with the second: touching 89.7 -> 90.0 %; of the numbers written apart 1,852 of 1,900 right
    # with either, but at least 15 read otherwise, some with a digit where there is none ("580" as "5190"). Not shipped.
    parser.add_argument("--wider", type=int, default=0, help="residual dilated convolutions before the last layer")
    parser.add_argument("--validation-lines", type=int, default=1000, help="lines of validation digits to judge on")


def main(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train = load_split("train", args.data_dir)
    images, labels = train.images[: args.train_digits], train.labels[: args.train_digits]
    held = load_split("validation", args.data_dir)
    check_rng = np.random.default_rng(12345)
    checks = [make_line(held.images, held.labels, check_rng, args.vary_size) for _ in range(args.validation_lines)]
    model = from_exported(Path(args.init), args.wider) if args.init else LineNet(args.wider)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.steps, pct_start=0.1)
    ctc = nn.CTCLoss(blank=BLANK, zero_infinity=True)
    started = time.time()
    progress = tqdm(range(1, args.steps + 1), desc="line reader", unit="step")
    waiting: list[list[tuple[np.ndarray, str]]] = []
    for step in progress:
        if not waiting:  # four batches at a time, of lines of like widths: less padding to compute
            made = (
                make_line(images, labels, rng, args.vary_size, args.augment, args.narrow, args.ones)
                for _ in range(4 * args.batch_size)
            )
            lines = sorted(made, key=width_of)
            waiting = [lines[n * args.batch_size : (n + 1) * args.batch_size] for n in range(4)]
        x, targets, frames, lengths = batch(waiting.pop())
        log_probs = model(x).log_softmax(2).transpose(0, 1)  # [T, N, 11], as CTCLoss takes them
        loss = ctc(log_probs, targets, frames, lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        progress.set_postfix(loss=f"{loss.item():.3f}")
        if step % 1000 == 0 or step == args.steps:
            tqdm.write(f"step {step}: loss {loss.item():.4f}, validation lines {validate(model, checks):.1%}")
    accuracy = validate(model, checks)
    command = (
        f"python -m training line_reader --steps {args.steps} --batch-size {args.batch_size} --lr {args.lr} "
        f"--augment {args.augment} --narrow {args.narrow} --ones {args.ones} --train-digits {args.train_digits} "
        f"--seed {args.seed} --out {args.out}"
        + (f" --wider {args.wider}" if args.wider else "")
        + (f" --init {args.init}" if args.init else "")
    )
    out = Path(args.out)
    export(model, out)
    check_parity(model, out, sorted(checks, key=width_of)[-16:])  # the widest lines: the most frames to differ
    card = {
        "name": out.stem,
        "task": "a line of written digits -> per-frame scores of 0-9 and the CTC blank (class 10)",
        "input": "line: float32 [N, 1, 32, W], W even; service/line_reader.py line_image",
        "validation_line_accuracy": round(accuracy, 4),
        "validation_lines": len(checks),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(time.time() - started),
        "reproduce": [*earlier_commands(args.init), command],
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }
    out.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")
    print(f"wrote {out} (validation lines {accuracy:.1%})")
