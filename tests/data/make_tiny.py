"""Regenerate the tiny test dataset in ``tests/data/tiny`` (deterministic, seed 0).

40 items in 5 themes with readable titles; 120 users whose histories walk forward
through one preferred theme (item k -> k+1 with probability 0.85), so both
sequential and collaborative models can learn it, and text similarity is informative.
"""
import os
import random

THEMES = {
    "shoes": ["running shoes", "hiking boots", "leather sandals", "canvas sneakers",
              "winter boots", "trail runners", "dress shoes", "slip-on loafers"],
    "makeup": ["red lipstick", "black mascara", "liquid foundation", "eye shadow palette",
               "nail polish", "face powder", "lip gloss", "eyeliner pencil"],
    "kitchen": ["chef knife", "cast iron pan", "wooden spoon", "coffee grinder",
                "tea kettle", "mixing bowl", "cutting board", "pepper mill"],
    "books": ["mystery novel", "science fiction novel", "cook book", "travel guide",
              "poetry collection", "history of rome", "fantasy saga", "children picture book"],
    "games": ["puzzle game", "racing game", "football game", "space shooter",
              "role playing game", "chess set", "card game", "strategy board game"],
}


def main(out_dir=os.path.join(os.path.dirname(__file__), "tiny"), seed=0):
    rng = random.Random(seed)
    os.makedirs(out_dir, exist_ok=True)
    items = []  # (item_id, title, category, brand)
    for theme, titles in THEMES.items():
        for j, title in enumerate(titles):
            items.append((f"i{len(items) + 1:03d}", title, theme, f"brand_{theme}_{j % 2}"))
    by_theme = {t: [it for it in items if it[2] == t] for t in THEMES}
    with open(os.path.join(out_dir, "tiny.item"), "w") as f:
        f.write("item_id:token\ttitle:token_seq\tcategories:token_seq\tbrand:token\n")
        for iid, title, cat, brand in items:
            f.write(f"{iid}\t{title}\t{cat}\t{brand}\n")
    rows = []
    for u in range(1, 121):
        theme = list(THEMES)[u % len(THEMES)]
        pool = by_theme[theme]
        pos = rng.randrange(len(pool))
        length = rng.randint(6, 12)
        for t in range(length):
            rows.append((f"u{u:03d}", pool[pos][0], float(t), float(rng.randint(3, 5))))
            if rng.random() < 0.85:
                pos = (pos + 1) % len(pool)
            else:
                pos = rng.randrange(len(pool))
    with open(os.path.join(out_dir, "tiny.inter"), "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\trating:float\n")
        for r in rows:
            f.write(f"{r[0]}\t{r[1]}\t{r[2]}\t{r[3]}\n")


if __name__ == "__main__":
    main()
