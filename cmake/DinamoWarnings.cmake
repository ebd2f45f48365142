# Warnings are set per target and kept PRIVATE, so nothing leaks to consumers.
function(dinamo_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow)
  if(DINAMO_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
