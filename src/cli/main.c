#include <stdio.h>
#include "backprop/backprop.h"
int main(void) { printf("backprop %s\n", BP_VERSION); return 0; }
