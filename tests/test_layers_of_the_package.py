"""The package's import graph runs one way: folders are layers, and no module imports one of
a higher layer, or imports the package's own modules inside a function (the sign of a
cycle worked around).

    core <- data, models <- pruning <- workdir <- train <- cli <- the entry points
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'spnet_jax'
# Lower number = lower layer; a module may import only its own layer or lower ones.
LAYERS = {'core': 0, 'data': 1, 'models': 1, 'pruning': 2, 'workdir': 3, 'train': 4, 'cli': 5}
ENTRY_POINTS = 6  # spnet_jax/<tool>.py: `python -m spnet_jax.<tool>`
PACKAGE_INIT = -1  # spnet_jax/__init__.py: the public API (load), imported by everything


def layer_of(module: str) -> int:
    parts = module.split('.')
    assert parts[0] == 'spnet_jax', module
    if len(parts) == 1:
        return PACKAGE_INIT
    if parts[1] in LAYERS:
        return LAYERS[parts[1]]
    return ENTRY_POINTS


def modules():
    for path in sorted(PACKAGE.rglob('*.py')):
        rel = path.relative_to(PACKAGE.parent).with_suffix('')
        name = '.'.join(rel.parts).removesuffix('.__init__')
        yield name, path, ast.parse(path.read_text())


def own_imports(tree):
    """``(imported module, node, inside a function)`` for each import of spnet_jax."""
    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith(
                    'spnet_jax'):
                for alias in child.names:
                    full = f'{child.module}.{alias.name}'
                    yield (full if layer_of(full) != layer_of(child.module)
                           or full.split('.')[1:2] == child.module.split('.')[1:2]
                           else child.module), child, inside
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith('spnet_jax'):
                        yield alias.name, child, inside
            yield from visit(child, inside)
    yield from visit(tree, False)


def test_no_module_imports_a_higher_layer():
    upward = []
    for name, path, tree in modules():
        here = layer_of(name)
        for target, node, _ in own_imports(tree):
            there = layer_of(target)
            if there > here and not (here == PACKAGE_INIT and there == LAYERS['workdir']):
                upward.append(f'{path.relative_to(PACKAGE.parent)}:{node.lineno} imports '
                              f'{target}')
    assert not upward, '\n'.join(upward)


def test_no_function_local_imports_of_the_package():
    local = [f'{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {target}'
             for _, path, tree in modules() for target, node, inside in own_imports(tree)
             if inside]
    assert not local, '\n'.join(local)


def test_the_layers_are_the_folders():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != '__pycache__'}
    assert folders == set(LAYERS)
    top = {p.stem for p in PACKAGE.glob('*.py')} - {'__init__'}
    # Only the `python -m spnet_jax.<tool>` entry points sit at the top, each one line of
    # work: running its command from spnet_jax/cli/.
    assert top == {'prune', 'evaluate', 'export', 'profile', 'import_release'}
    for tool in top:
        tree = ast.parse((PACKAGE / f'{tool}.py').read_text())
        imported = {t for t, _, _ in own_imports(tree)}
        assert imported == {f'spnet_jax.cli.{tool}', 'spnet_jax.cli.entry'}, (tool, imported)
