"""asyncvla_ros: AsyncVLA vision-language-action policies on ROS 2 robot arms.

The generated message modules (`asyncvla_ros.msg`) are installed beside the package by the build;
extending `__path__` lets a source checkout on `sys.path` find them too.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
