"""The `asyncvla` command line."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from asyncvla_ros.paths import SOURCE_ROOT


def cmd_docs(args) -> int:
    """Regenerate the README parameter tables and config/<node>.yaml from the schemas."""
    from asyncvla_ros.nodes.params import SCHEMAS, render_yaml

    readme = SOURCE_ROOT / 'README.md'
    text = readme.read_text()
    for node, schema in SCHEMAS.items():
        block = f'<!-- params:{node} -->\n{schema.markdown_table()}\n<!-- /params -->'
        pattern = re.compile(rf'<!-- params:{node} -->\n(?:.*?\n)??<!-- /params -->', re.S)
        if not pattern.search(text):
            print(f'docs: README.md has no <!-- params:{node} --> block; add one', file=sys.stderr)
            return 1
        text = pattern.sub(lambda _: block, text)
        config = SOURCE_ROOT / 'config' / f'{node.removesuffix("_node")}.yaml'
        values = schema.load_yaml(config) if config.exists() else None
        config.write_text(render_yaml(schema, values))
        print(f'docs: wrote {config.relative_to(SOURCE_ROOT)}')
    readme.write_text(text)
    print(f'docs: wrote the parameter tables in {readme.relative_to(SOURCE_ROOT)}')
    return 0


def cmd_demo(args) -> int:
    from asyncvla_ros.tools.demo import run_demo
    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='asyncvla', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('docs', help=cmd_docs.__doc__).set_defaults(func=cmd_docs)
    demo = sub.add_parser('demo', help='closed loop on the simulated SO-101 arm')
    demo.add_argument('--episodes', type=int, default=20)
    demo.add_argument('--output', type=Path, default=Path('runs/demo'))
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
