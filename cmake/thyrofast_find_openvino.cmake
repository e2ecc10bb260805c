# thyrofast_find_openvino(<found_var>): find OpenVINO's CMake package for thyrofast::runtime.
# Order: what CMake finds by itself (OpenVINO_DIR, CMAKE_PREFIX_PATH, an installed
# OpenVINO), then the `openvino` Python wheel, which ships OpenVINOConfig.cmake in
# <site-packages>/openvino/cmake (asked of Python_EXECUTABLE, else python3 on PATH).
function(thyrofast_find_openvino out)
  find_package(OpenVINO QUIET COMPONENTS Runtime)
  if(NOT OpenVINO_FOUND)
    set(_py "${Python_EXECUTABLE}")
    if(NOT _py)
      find_program(_py NAMES python3 python)
    endif()
    if(_py)
      execute_process(
        COMMAND "${_py}" -c "import importlib.util as u, os; s = u.find_spec('openvino'); print(os.path.join(os.path.dirname(s.origin), 'cmake') if s and s.origin else '')"
        OUTPUT_VARIABLE _ov_dir OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _rc)
      if(_rc EQUAL 0 AND _ov_dir AND EXISTS "${_ov_dir}/OpenVINOConfig.cmake")
        set(OpenVINO_DIR "${_ov_dir}" CACHE PATH "OpenVINO's CMake package (from the openvino wheel)" FORCE)
        find_package(OpenVINO QUIET COMPONENTS Runtime)
      endif()
    endif()
  endif()
  if(OpenVINO_FOUND)
    set(OpenVINO_VERSION "${OpenVINO_VERSION}" PARENT_SCOPE)
    set(OpenVINO_DIR "${OpenVINO_DIR}" PARENT_SCOPE)
  endif()
  set(${out} ${OpenVINO_FOUND} PARENT_SCOPE)
endfunction()
