"""--arch: the network as a comma list of tokens, parsed here and only here
(pynn.model.build turns the tokens into layers)."""
import math

from .errors import PynnError

HELP = ("comma list of layers: c32 = 3x3 conv of 32 channels (+ batch norm) + "
        "activation, c32k5 = the same with a 5x5 kernel, p = 2x2 max-pool, "
        "g = global average pooling (an image to its channel means), "
        "r32 = residual block, relu(x + F(x)) with F a c32 conv and a second "
        "one without activation (x has 32 channels already), "
        "f128 = dense layer of 128 + activation, d0.3 = dropout 0.3; "
        "the dense layer to the classes is added ('' for none before it)")
IMAGE_TOKENS = ("c", "p", "g", "r")  # the tokens that read the vectors as images


def parse(text):
    """[("c", channels, k), ("p",), ("g",), ("r", channels), ("f", units), ("d", p), ...]
    from "c32,p,r32,f128";
    a PynnError naming a token that is not one of these, or an empty token
    inside the list. An empty (or blank) text is no layer at all."""
    if not text.strip():
        return []
    tokens = []
    for raw in text.split(","):
        tok = raw.strip()
        if not tok:
            raise PynnError(f"--arch: an empty token in {text!r} (a comma too many?)")
        try:
            tokens.append(_token(tok))
        except ValueError:
            raise PynnError(f"--arch: bad token {tok!r} in {text!r} ({HELP}; "
                            "kernel sizes odd, dropout in [0, 1))") from None
    return tokens


def _token(tok):
    """One token's tuple, or ValueError."""
    kind, rest = tok[0], tok[1:]
    if kind == "c":
        channels, has_k, k = rest.partition("k")
        t = ("c", int(channels), int(k) if has_k else 3)
        if t[1] < 1 or t[2] < 1 or t[2] % 2 == 0:
            raise ValueError
    elif tok in ("p", "g"):
        t = (tok,)
    elif kind in ("r", "f"):
        t = (kind, int(rest))
        if t[1] < 1:
            raise ValueError
    elif kind == "d":
        t = ("d", float(rest))
        if not 0.0 <= t[1] < 1.0:
            raise ValueError
    else:
        raise ValueError
    return t


def needs_images(tokens):
    """Whether these tokens read the input vectors as square images."""
    return any(t[0] in IMAGE_TOKENS for t in tokens)


def image_shape(width):
    """(H, W, 1) for vectors of a square number of values, else None."""
    side = math.isqrt(width)
    return (side, side, 1) if side * side == width else None
