/* <Windows.h>, as Windows spells it on a case-insensitive file system. */
#include "windows.h"
