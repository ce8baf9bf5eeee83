# Lets rosidl build against the ROS 2 `ros-*` PyPI wheels (no ROS distro installed).
# On a machine with a ROS install (the `ros-std-msgs` distribution is absent) it does nothing.
find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module)
execute_process(
  COMMAND "${Python3_EXECUTABLE}" -c
    "import os, importlib.metadata as m; d = m.distribution('ros-std-msgs'); print(os.path.abspath(str(d.locate_file('')) + '/../../..'))"
  OUTPUT_VARIABLE ROS_WHEEL_PREFIX OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _ros_wheels_missing ERROR_QUIET)

macro(ros_pip_wheels_fix_imported_targets)
  # The wheels' exported targets hard-code the include paths of the machine that built them
  # (/opt/python/cp3xx-cp3xx/...): point them at this interpreter's headers and numpy.
  if(ROS_WHEEL_PREFIX AND NOT _ros_wheels_missing)
    execute_process(COMMAND "${Python3_EXECUTABLE}" -c "import numpy; print(numpy.get_include())"
      OUTPUT_VARIABLE _numpy_include OUTPUT_STRIP_TRAILING_WHITESPACE)
    get_property(_imported DIRECTORY PROPERTY IMPORTED_TARGETS)
    foreach(_target IN LISTS _imported)
      get_target_property(_includes ${_target} INTERFACE_INCLUDE_DIRECTORIES)
      if(_includes AND "${_includes}" MATCHES "/opt/python/")
        set(_fixed "")
        foreach(_dir IN LISTS _includes)
          if(_dir MATCHES "^/opt/python/.*/numpy/")
            list(APPEND _fixed "${_numpy_include}")
          elseif(_dir MATCHES "^/opt/python/")
            list(APPEND _fixed ${Python3_INCLUDE_DIRS})
          else()
            list(APPEND _fixed "${_dir}")
          endif()
        endforeach()
        set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_fixed}")
      endif()
    endforeach()
  endif()
endmacro()

if(ROS_WHEEL_PREFIX AND NOT _ros_wheels_missing)
  message(STATUS "ROS 2 from pip wheels in ${ROS_WHEEL_PREFIX}")
  list(PREPEND CMAKE_PREFIX_PATH "${ROS_WHEEL_PREFIX}")
  set(ENV{AMENT_PREFIX_PATH} "${ROS_WHEEL_PREFIX}")
endif()
