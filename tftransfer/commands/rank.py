"""`tftransfer rank-backbones`: candidate backbones scored on a folder of
images before training any of them (`tftransfer.rank_backbones`)."""

import json
import os

from tftransfer.backbones.applications import ARCHITECTURES
from tftransfer.backbones.applications import find_architecture
from tftransfer.data.folders import image_dataset_from_folder
from tftransfer.evaluation.ranking import rank_backbones

RANKING_FILE = "ranking.json"
PLOT_FILE = "ranking.png"


def _size(candidates, given):
    if given is not None:
        return given
    sizes = {ARCHITECTURES[find_architecture(c)].default_size for c in candidates
             if find_architecture(c)}
    if len(sizes) == 1:
        return sizes.pop()
    raise ValueError(
        "Pass --image-size: the candidates do not share one default input size "
        f"({', '.join(map(str, sorted(sizes))) or 'none is a backbone name'}). "
        f"Received: --image-size=None with candidates {list(candidates)}")


def run(args):
    size = _size(args.candidates, args.image_size)
    weights = {"none": None}.get(str(args.weights).lower(), args.weights)
    data = image_dataset_from_folder(args.data_dir, image_size=size, verbose=1)
    print(f"{data}", flush=True)
    ranking = rank_backbones(list(args.candidates), data, method=args.method, weights=weights,
                             max_examples=args.max_examples, verbose=0)
    print(ranking)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, RANKING_FILE), "w") as f:
            json.dump(ranking.to_dict(), f, indent=2)
        ranking.plot().savefig(os.path.join(args.out, PLOT_FILE), dpi=120)
        print(f"ranking: {os.path.join(args.out, RANKING_FILE)}, plot: "
              f"{os.path.join(args.out, PLOT_FILE)}")
    return 0
