# Writes the bytes of IN as a C array named NAME into OUT.
# cmake -DIN=file -DOUT=file.c -DNAME=symbol -P embed.cmake
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" hexlen)
math(EXPR len "${hexlen} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "((0x..,){16})" "\\1\n  " body "${body}")
file(WRITE "${OUT}"
  "/* Generated from ${IN} at build time. */\n"
  "#include <stddef.h>\n#include <stdint.h>\n"
  "const uint8_t ${NAME}[] = {\n  ${body}0x00};\n"
  "const size_t ${NAME}_len = ${len};\n")
