/*
 * main.c -- the `ocap` command.
 *
 * The command is a program of libocap's public API (include/ocap.h),
 * linked statically: ocap_main makes a Lua state with the kernel built in,
 * finds the ocap.* modules as every libocap host does (next to the
 * program once installed, the source tree's lua/ for the build's own
 * binary, or $OCAP_LUADIR) and hands the command line to ocap.cli, which
 * implements the subcommands.
 */
#include <ocap.h>

int main(int argc, char **argv) {
  return ocap_main(argc, argv);
}
