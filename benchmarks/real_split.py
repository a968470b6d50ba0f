"""Small splits of the real images in ../shared/data, in the layout the split stage writes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
SOURCES = {"cats_dogs": "cats_dogs/PetImages/{}/*.jpg", "cifar10": "cifar10/jpg/*/{}/*.jpg"}  # {}: class folder
CLASSES = {"cats_dogs": {"cats": "Cat", "dogs": "Dog"},  # the split's class name -> the source's folder
           "cifar10": {name: name for name in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                               "horse", "ship", "truck")}}


def write_split(root: Path, task: str, per_class: dict[str, int], rng: np.random.Generator) -> None:
    """root/<split>/<class>/*.jpg (cats_dogs) or root/<split>.npz and classes.json (cifar10),
    `per_class[split]` real images of each class per split, none drawn twice."""
    classes = CLASSES[task]
    drawn = {name: iter(rng.permutation(sorted(SHARED_DATA.glob(SOURCES[task].format(source)))))
             for name, source in classes.items()}
    for split, count in per_class.items():
        files = [(name, next(drawn[name])) for name in classes for _ in range(count)]
        if task == "cats_dogs":
            for name, path in files:
                (root / split / name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, root / split / name / path.name)
        else:
            root.mkdir(parents=True, exist_ok=True)
            images = np.stack([np.asarray(Image.open(path).convert("RGB")) for _, path in files])
            labels = np.asarray([list(classes).index(name) for name, _ in files], dtype=np.int64)
            order = rng.permutation(len(files))
            np.savez_compressed(root / f"{split}.npz", images=images[order], labels=labels[order])
    if task == "cifar10":
        (root / "classes.json").write_text(json.dumps(list(classes)))
