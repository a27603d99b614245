"""YAML read with the safe loader, within bounds that no real recipe comes near, so that a hostile file costs
little to refuse: nesting depth, node count, and how far aliases expand (a "billion laughs": PyYAML shares
an aliased node, but pydantic, plugins and `kdagent validate`'s output walk every copy of it). The bounds are
checked while the document is composed, before any Python object is built."""

import yaml

MAX_DEPTH = 64
MAX_NODES = 50_000
MAX_ALIAS_NODES = 10_000


class TooCostly(yaml.YAMLError):
    """YAML that would cost too much to build; its message is the whole explanation."""


class BoundedLoader(yaml.SafeLoader):
    """The safe loader, counting nodes, nesting and the size of what each alias stands for as it composes."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth, self._nodes, self._expanded, self._sizes = 0, 0, 0, {}

    def compose_node(self, parent, index):
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise TooCostly(f"more than {MAX_NODES} YAML nodes")
        if self.check_event(yaml.AliasEvent):
            node = self.anchors.get(self.peek_event().anchor)
            if node is not None:  # an undefined alias is left to the composer's own error
                size = self._sizes.get(id(node))
                if size is None:  # its anchor is still being composed
                    raise TooCostly(f"the alias *{self.peek_event().anchor} refers to itself")
                self._expanded += size
                if self._expanded > MAX_ALIAS_NODES:
                    raise TooCostly(f"YAML aliases expand to more than {MAX_ALIAS_NODES} nodes")
            return super().compose_node(parent, index)
        if self.check_event(yaml.ScalarEvent):
            node = super().compose_node(parent, index)
            self._sizes[id(node)] = 1
            return node
        if self._depth >= MAX_DEPTH:
            raise TooCostly(f"nesting deeper than {MAX_DEPTH} levels")
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
        self._sizes[id(node)] = 1 + sum(self._sizes[id(child)] for child in children)  # aliases counted in full
        return node


def safe_load(text: str):
    """`yaml.safe_load` within the bounds. A RecursionError or MemoryError (a parser that gave out before a
    bound was reached) is a `TooCostly` too, so that callers report every one of them in one line."""
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise TooCostly(f"nesting deeper than {MAX_DEPTH} levels") from None
    except MemoryError:
        raise TooCostly("too large to read in memory") from None
    finally:
        loader.dispose()
