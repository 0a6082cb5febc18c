"""Draws web/icon.png: two keyframes with in-between frames, a forward and a backward arrow."""
from PIL import Image, ImageDraw

S = 4  # supersampling
W = 256 * S
img = Image.new("RGBA", (W, W), (0, 0, 0, 0))
d = ImageDraw.Draw(img)
d.rounded_rectangle([0, 0, W - 1, W - 1], radius=48 * S, fill=(24, 28, 40, 255))

def frame(cx, cy, w, h, fill, outline=None):
    d.rounded_rectangle([cx - w // 2, cy - h // 2, cx + w // 2, cy + h // 2], radius=8 * S, fill=fill,
                        outline=outline, width=4 * S if outline else 0)

cy = 128 * S
# keyframes
frame(52 * S, cy, 56 * S, 76 * S, (255, 166, 48, 255))
frame(204 * S, cy, 56 * S, 76 * S, (64, 176, 255, 255))
# in-betweens: colours blend from start to end
for i, x in enumerate((100, 128, 156)):
    t = (i + 1) / 4
    col = tuple(int(a * (1 - t) + b * t) for a, b in zip((255, 166, 48), (64, 176, 255))) + (255,)
    frame(x * S, cy, 20 * S, 52 * S, col)

def arrow(y, x0, x1, col):
    d.line([x0 * S, y * S, x1 * S, y * S], fill=col, width=7 * S)
    sgn = 1 if x1 > x0 else -1
    tip = x1 * S + sgn * 6 * S
    d.polygon([(tip, y * S), (tip - sgn * 18 * S, (y - 11) * S), (tip - sgn * 18 * S, (y + 11) * S)], fill=col)

arrow(62, 40, 206, (255, 166, 48, 255))     # forward in time, from the start frame
arrow(194, 216, 50, (64, 176, 255, 255))    # backward in time, from the end frame
img.resize((256, 256), Image.LANCZOS).save("web/icon.png", optimize=True)
